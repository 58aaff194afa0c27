"""`python -m vit_tutorial train | evaluate | predict` (also installed as `vit-tutorial`).

Training options are generated from the fields of `ViTConfig` and `TrainConfig`, so the command
line and the configs cannot drift apart. `--model resnet` trains the CNN baseline (ResNet-18) with
the same pipeline instead of the ViT. Errors are one line on stderr and a non-zero exit;
set VIT_TUTORIAL_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import typing
from pathlib import Path

from .config import FineTuneConfig, ResNetConfig, RunOptions, TrainConfig, ViTConfig, env_flag, help_of
from .errors import Interrupted, VitTutorialError, first_line, shown
from .registry import FROM_SCRATCH, MODELS
from .signals import terminate_as_interrupt

FINETUNED = "vit_b_16"
MODEL_OPTIONS = ("patch_size", "dim", "depth", "heads", "mlp_dim", "dropout", "drop_path")  # the rest: CIFAR-10's
# RunOptions on the command line (`--device` is among the data options; every epoch is logged)
RUN_OPTIONS = ("precision", "threads", "compile", "progress", "resume", "overwrite", "snapshot_every")
SWEEP_RUN_OPTIONS = ("precision", "compile")  # the sweep gives each worker its share of the cores
DEBUG_ENV = "VIT_TUTORIAL_DEBUG"


def _path(text: str) -> Path:
    """A path given on the command line; an empty one is refused rather than read as the working directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    return Path(text)


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a folder name, or leave the option out")
    return text


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line and a hint, not the whole usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _add_config_options(
    parser: argparse.ArgumentParser, cls, names: tuple[str, ...] | None = None, defaults=None
) -> None:
    """One option per field of `cls` (or of `names`), with the field's help; `defaults`, an instance, overrides
    the field defaults. A `Literal` field takes its choices, a bool field --x / --no-x."""
    group = parser.add_argument_group(f"{cls.__name__} options")
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if names is not None and field.name not in names:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name) if defaults is not None else field.default
        help_text = (
            f"{help_of(field)} (default: {default!r})"
            if isinstance(default, str)
            else f"{help_of(field)} (default: {default})"
        )
        kind = hints[field.name]
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(kind) is typing.Literal:
            group.add_argument(flag, choices=typing.get_args(kind), default=None, help=help_text)
        else:
            group.add_argument(flag, type=kind, default=None, metavar=field.name.upper(), help=help_text)


def _config_from_args(cls, args: argparse.Namespace, defaults=None):
    chosen = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return defaults.replace(**chosen) if defaults is not None else cls(**chosen)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=_nonempty,
        metavar="ROOT",
        help="CIFAR-10 root (default: $VIT_TUTORIAL_DATA or ~/.cache/vit_tutorial/data)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download the original CIFAR-10 with torchvision if it is missing (done anyway when no root is set)",
    )
    parser.add_argument(
        "--subset",
        type=int,
        metavar="N",
        help="use N training images and N // 5 validation and test images (quick runs)",
    )
    parser.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default: auto)")


def _add_model_option(parser: argparse.ArgumentParser, default: str | None) -> None:
    if default:
        choices = ", ".join(f"{name}: {MODELS[name].description}" for name in FROM_SCRATCH)
        parser.add_argument("--model", choices=FROM_SCRATCH, default=default, help=f"{choices} (default: {default})")
    else:
        parser.add_argument(
            "--model", choices=tuple(MODELS), help="check the checkpoint holds this model (default: whatever it holds)"
        )


def _add_run_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument(
        "--out", type=_path, help=f"output folder (default: {default_out}, under $VIT_TUTORIAL_RUNS if set)"
    )
    _add_config_options(parser, RunOptions, RUN_OPTIONS)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vit-tutorial", description="Vision Transformers from scratch on CIFAR-10.")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{train,sweep,finetune,evaluate,predict}", parser_class=Parser
    )
    for add in (
        _add_train_command,
        _add_sweep_command,
        _add_finetune_command,
        _add_evaluate_command,
        _add_predict_command,
    ):
        add(commands)
    return parser


def _add_train_command(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a ViT (or the ResNet baseline) with early stopping",
        description="Train a ViT, or with --model resnet the ResNet-18 baseline, on CIFAR-10.",
    )
    _add_model_option(train, "vit")
    _add_data_options(train)
    _add_run_options(train, "runs/MODEL")
    train.add_argument(
        "--no-test",
        action="store_true",
        help="leave the test set alone at the end (runs that are chosen between by validation: score only the "
        "chosen one, with evaluate or tools/ship_pretrained.py)",
    )
    _add_config_options(train, ViTConfig, MODEL_OPTIONS)
    _add_config_options(train, TrainConfig)


def _add_sweep_command(commands) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="train a grid of recipes side by side and rank them by validation accuracy",
        description="Train every recipe of a TOML grid ([base] and [recipes.NAME] tables of TrainConfig / ViTConfig "
        "settings) in worker processes, then write OUT/results.json, OUT/results.md and OUT/winner.pt. "
        "Re-running skips finished recipes and resumes interrupted ones; the test set is not used.",
    )
    sweep.add_argument(
        "grid", type=_path, metavar="GRID", help="a grid file, or a shipped grid by name (gpu-first, gpu-third, ...)"
    )
    sweep.add_argument("--out", type=_path, required=True, help="folder for the recipes' run folders and the results")
    sweep.add_argument(
        "--parallel", type=int, default=1, help="recipes trained at the same time on the device (default: 1)"
    )
    sweep.add_argument(
        "--stack",
        action="store_true",
        help="train recipes that share the model and batch size as one stacked model in one process "
        "(vit_tutorial.stacked); the others as separate workers",
    )
    sweep.add_argument(
        "--devices",
        metavar="D1,D2,...",
        help="place the workers on these devices, each on the least busy one (e.g. cuda:0,cuda:1); "
        "default: --device for all",
    )
    _add_config_options(sweep, RunOptions, SWEEP_RUN_OPTIONS)
    _add_data_options(sweep)


def _add_finetune_command(commands) -> None:
    from .finetune import FINETUNE_RECIPE

    finetune = commands.add_parser(
        "finetune",
        help="fine-tune ImageNet-pretrained ViT-B/16 (downloads 330 MB of weights once)",
        description="Fine-tune torchvision's ImageNet-pretrained ViT-B/16 on CIFAR-10 upsampled to 224x224. "
        "A GPU is strongly advised.",
    )
    _add_data_options(finetune)
    _add_run_options(finetune, f"runs/{FINETUNED}")
    finetune.add_argument(
        "--weights",
        choices=("imagenet", "random"),
        default="imagenet",
        help="start from ImageNet weights, or from random ones to check the code path offline (default: imagenet)",
    )
    _add_config_options(finetune, FineTuneConfig)
    _add_config_options(finetune, TrainConfig, defaults=FINETUNE_RECIPE)


def _add_evaluate_command(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="test-set metrics of a checkpoint",
        description="Evaluate a checkpoint on the CIFAR-10 test set.",
    )
    _add_model_option(evaluate, None)
    _add_data_options(evaluate)
    evaluate.add_argument("--checkpoint", type=_path, help="checkpoint to evaluate (default: runs/MODEL/best.pt)")
    evaluate.add_argument(
        "--tta",
        action="store_true",
        help="score the mean logits of 6 test-time views (as is and mirrored, each also shifted 4 pixels either "
        "way); written to metrics-tta.json by default",
    )
    evaluate.add_argument(
        "--metrics",
        type=_path,
        help="where to write the JSON metrics, a .json file (default: beside the checkpoint, metrics.json for "
        "best.pt, metrics-NAME.json for NAME.pt, metrics-subset-N.json with --subset)",
    )


def _add_predict_command(commands) -> None:
    predict = commands.add_parser(
        "predict", help="top-k classes for image files", description="Classify image files of any size."
    )
    predict.add_argument("images", nargs="+", type=_path, metavar="IMAGE")
    predict.add_argument("--checkpoint", type=_path, help="checkpoint to use (default: runs/vit/best.pt)")
    predict.add_argument("--top-k", type=int, default=5, help="how many classes to print (default: 5)")


def _load_data(args: argparse.Namespace, val_size: int, seed: int, test_only: bool = False):
    from .data import load_data

    download = True if args.download else None
    return load_data(
        args.data, val_size=val_size, seed=seed, download=download, subset=args.subset, test_only=test_only
    )


def _train(args: argparse.Namespace) -> None:
    from .registry import build_model
    from .run_folder import runs_dir

    if args.model == "resnet":
        given = [f"--{name.replace('_', '-')}" for name in MODEL_OPTIONS if getattr(args, name) is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)}: ViT options, but ResNet-18 has a fixed shape; drop them or use --model vit"
            )
        model_config = ResNetConfig()
    else:
        model_config = _config_from_args(ViTConfig, args)
    train_config = _config_from_args(TrainConfig, args)
    _train_run(args, build_model(model_config, train_config.seed), train_config, runs_dir() / args.model)


def _finetune(args: argparse.Namespace) -> None:
    import torch

    from .finetune import FINETUNE_RECIPE, FineTunedViT, load_imagenet_weights
    from .run_folder import runs_dir

    train_config = _config_from_args(TrainConfig, args, FINETUNE_RECIPE)
    torch.manual_seed(train_config.seed)
    model = FineTunedViT(_config_from_args(FineTuneConfig, args))
    if args.weights == "imagenet" and not args.resume:
        load_imagenet_weights(model)
    elif args.weights == "random":
        print("random weights: this run checks the code path; its accuracy means nothing", file=sys.stderr)
    _train_run(args, model, train_config, runs_dir() / FINETUNED)


def _train_run(args: argparse.Namespace, model, train_config: TrainConfig, default_out: Path) -> None:
    from .runs import train_run

    options = _config_from_args(RunOptions, args)
    data = _load_data(args, train_config.val_size, train_config.seed)
    train_run(model, data, train_config, args.out or default_out, options, test=not getattr(args, "no_test", False))


def _sweep(args: argparse.Namespace) -> None:
    from .devices import select_device
    from .sweep import SweepOptions, run_sweep

    if args.subset is not None:
        from .data import MIN_SUBSET

        if args.subset < MIN_SUBSET:
            raise ValueError(f"--subset must be at least {MIN_SUBSET} training images, got {args.subset}")

    run = _config_from_args(RunOptions, args)
    devices = tuple(d.strip() for d in args.devices.split(",") if d.strip()) if args.devices else ()
    for device in devices:
        select_device(device)  # an unknown or missing device is refused before any worker starts
    options = SweepOptions(data=args.data, download=args.download, subset=args.subset, run=run, devices=devices)
    rows = run_sweep(args.grid, args.out, parallel=args.parallel, options=options, stack=args.stack)
    print((args.out / "results.md").read_text(), end="")
    failed = [row["recipe"] for row in rows if row["status"] != "finished"]
    print(f"wrote {shown(args.out)}/results.json, results.md" + (", winner.pt" if len(failed) < len(rows) else ""))
    if failed:
        raise VitTutorialError(
            f"{len(failed)} of {len(rows)} recipes failed ({', '.join(failed)}); their {shown(args.out)}/NAME/log.txt "
            "say why"
        )


def _evaluate(args: argparse.Namespace) -> None:
    from .checkpoint import load_checkpoint, model_from_checkpoint, stored_architecture
    from .devices import select_device
    from .evaluate import save_metrics, test_metrics
    from .record import RunRecord
    from .run_folder import runs_dir

    args.checkpoint = args.checkpoint or runs_dir() / (args.model or "vit") / "best.pt"
    payload = load_checkpoint(args.checkpoint)
    held = stored_architecture(payload, str(args.checkpoint))
    if args.model is not None and held != args.model:
        raise ValueError(f"{args.checkpoint} holds a {held} model, not --model {args.model}; pass the matching --model")
    record = RunRecord.from_dict(payload)
    device = select_device(args.device)
    config = record.train_config
    data = _load_data(args, config.val_size, config.seed, test_only=True)
    digest = payload["content_sha256"]
    target = _metrics_path(args.metrics, args.checkpoint, digest, data.provenance, args.tta)
    model = model_from_checkpoint(payload, str(args.checkpoint)).to(device)
    metrics = test_metrics(
        model,
        data.test,
        record,
        device=device,
        provenance=data.provenance,
        checkpoint=args.checkpoint,
        checkpoint_sha256=digest,
        tta=args.tta,
    )
    path = save_metrics(metrics, target)
    views = " (mean of 6 test-time views)" if args.tta else ""
    print(
        f"test accuracy {metrics['accuracy']:.4f}{views} on {metrics['num_images']} images "
        f"({data.provenance['description']}); wrote {shown(path)}"
    )
    for name, row in metrics["per_class"].items():
        print(f"  {name:<11} precision {row['precision']:.3f}  recall {row['recall']:.3f}  f1 {row['f1']:.3f}")


TEST_IDENTITY = ("source", "description", "test_fingerprint", "subset")


def _metrics_path(given: Path | None, checkpoint: Path, digest: str, provenance: dict, tta: bool = False) -> Path:
    """Where `evaluate` writes: `given`, else beside the checkpoint (metrics.json for best.pt, metrics-NAME.json
    for NAME.pt, metrics-subset-N.json for a subset of N test images, metrics-tta.json with test-time views).
    Never over anything but a metrics file of this checkpoint measured on the same test data the same way: a
    run's own metrics.json is what `tools/ship_pretrained.py` ships."""
    if given is None:
        subset = provenance.get("subset")
        stem = "metrics" if checkpoint.name == "best.pt" else f"metrics-{checkpoint.stem}"
        stem += "-tta" if tta else ""
        given = checkpoint.with_name(f"{stem}-subset-{subset['test']}.json" if subset else f"{stem}.json")
    if given.is_file():
        try:
            earlier = json.loads(given.read_text())
            earlier = earlier if isinstance(earlier, dict) and "accuracy" in earlier else None
        except (OSError, ValueError, UnicodeDecodeError):
            earlier = None
        if earlier is None:
            raise VitTutorialError(
                f"{shown(given)} exists and is not a metrics file; it is left alone: pass another --metrics PATH"
            )
        if not all(earlier.get("provenance", {}).get(k) == provenance.get(k) for k in TEST_IDENTITY):
            raise VitTutorialError(
                f"{shown(given)} holds metrics measured on other data "
                f"({earlier.get('provenance', {}).get('description', 'unknown')}); pass --metrics PATH to write "
                "these elsewhere"
            )
        if earlier.get("tta", False) != tta:
            raise VitTutorialError(
                f"{shown(given)} holds metrics measured {'without' if tta else 'with'} test-time views; pass "
                "--metrics PATH to write these elsewhere"
            )
        if (
            earlier.get("checkpoint_sha256", digest) != digest
            or earlier.get("checkpoint", checkpoint.name) != checkpoint.name
        ):
            theirs = f"{earlier.get('checkpoint', '?')}, content {str(earlier.get('checkpoint_sha256', '?'))[:12]}"
            raise VitTutorialError(
                f"{shown(given)} holds the metrics of another checkpoint ({theirs}), not of {shown(checkpoint)} "
                f"(content {digest[:12]}); pass --metrics PATH to write these elsewhere"
            )
    return given


def _predict(args: argparse.Namespace) -> None:
    from .checkpoint import load_model
    from .predict import load_image, top_k
    from .registry import config_of
    from .run_folder import runs_dir

    if not 1 <= args.top_k <= 10:
        raise ValueError(f"--top-k must be between 1 and 10 (there are 10 classes), got {args.top_k}")
    model = load_model(args.checkpoint or runs_dir() / "vit" / "best.pt")
    for path in args.images:
        ranked = top_k(model, load_image(path, config_of(model).image_size), args.top_k)
        print(f"{path}: " + ", ".join(f"{name} {probability:.3f}" for name, probability in ranked))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"train": _train, "sweep": _sweep, "finetune": _finetune, "evaluate": _evaluate, "predict": _predict}[
        args.command
    ]
    terminate_as_interrupt()
    sys.stdout = QuietWhenClosed(sys.stdout)
    try:
        command(args)
    except BaseException as error:  # every failure a user can meet ends as one line and a non-zero exit
        if debugging() or isinstance(error, SystemExit):
            raise
        message, code = _one_line(error)
        print(f"vit-tutorial {args.command}: {message}", file=sys.stderr)
        return code
    return 0


class QuietWhenClosed:
    """Standard output that falls silent once its reader has gone (`train ... | head -1`): a closed pipe is not a
    reason to stop a run, so what is printed after it is dropped, and the run goes on and saves as it would."""

    def __init__(self, stream) -> None:
        self.stream, self.gone = stream, False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self.gone = True
        with contextlib.suppress(OSError, ValueError):  # so that the interpreter's last flush is quiet too
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def debugging() -> bool:
    """True when VIT_TUTORIAL_DEBUG asks for tracebacks (1, true, yes); 0 or empty does not."""
    return env_flag(DEBUG_ENV)


def _one_line(error: BaseException) -> tuple[str, int]:
    """What to print for a failure, and the exit status: 2 for bad input, 130 for Ctrl-C (143 for SIGTERM, 129 for
    SIGHUP),
    1 for anything unforeseen."""
    if isinstance(error, Interrupted):
        return first_line(error), error.exit_code
    if isinstance(error, KeyboardInterrupt):
        code = getattr(error, "exit_code", 130)
        return "interrupted; nothing half-written was left behind (files are replaced whole)", code
    if isinstance(error, (VitTutorialError, ValueError)):
        return f"error: {first_line(error)}", 2
    if isinstance(error, OSError):
        where = f" ({shown(error.filename)})" if error.filename else ""
        return f"error: {error.strerror or first_line(error)}{where}; check the path and its permissions", 2
    if isinstance(error, MemoryError):
        return "error: out of memory; try a smaller --batch-size", 2
    return (
        f"unexpected error ({type(error).__name__}: {first_line(error, 200)}); "
        f"set {DEBUG_ENV}=1 for the traceback and report it",
        1,
    )
