"""Training runs on disk: run folders, the one training entry point, reusing finished runs, shipped records.

A run folder holds `last.pt` (rewritten after every epoch, resumable), `best.pt` and `history.json` (at the
end), and `metrics.json` (the test-set score the command line adds). `RunFolder` owns the rules:

- a folder is written by one process at a time: it is locked for the life of the run (an advisory lock
  that dies with its process, so a killed run never blocks the next), and a second writer is refused with
  one line naming the process that holds it;
- a folder that holds a run is refused unless the run is resumed (`resume`) or replaced (`overwrite`,
  which first removes every file of the old run);
- a run resumes only with the same configs (a lower `lr`, another `grad_clip`, and more or fewer `epochs` for
  a constant rate excepted, and recorded) and on the same data;
- a cooldown (`branch`) continues a constant-rate run's checkpoint, weights, momentum, EMA and history, in a
  folder of its own, with the same configs but for its length.

`train_run` is what the command line and the sweep's workers call to train; `train_or_reuse` what the
notebooks call: a finished run with the same configs if there is one, else a shipped record, else train.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import pretrained
from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint, stored_architecture
from .config import TrainConfig
from .errors import CheckpointError, Interrupted, RunInUseError, TrainingDivergedError, first_line, shown
from .files import write_json
from .record import RunRecord
from .registry import config_of, spec_for

RUNS_ENV = "VIT_TUTORIAL_RUNS"
_CHECKOUT = Path(__file__).resolve().parent.parent
RECORDS = Path(__file__).parent / "pretrained"  # run records shipped with the package: <name>_run.json
LAST, BEST, HISTORY, METRICS = "last.pt", "best.pt", "history.json", "metrics.json"
SNAPSHOTS = "snapshots"  # epoch_NNNN.pt: copies of last.pt kept along the way (`fit(snapshot_every=...)`)
LOCK = ".lock"
# What a resumed run may change: the rate or clipping, e.g. after a divergence; the length of a constant-rate run.
RESUMABLE_CHANGES = ("lr", "grad_clip", "epochs")
BRANCH_CHANGES = ("epochs", "cooldown_epochs", "branch_from", "patience")  # what a cooldown sets for itself
DATA_IDENTITY = ("source", "fingerprint", "val_size", "split_seed", "subset")


def runs_dir() -> Path:
    """Where training runs live, so that notebooks (run from notebooks/) and the command line (run from the
    checkout) find the same ones: $VIT_TUTORIAL_RUNS when set, else `runs/` in the source checkout,
    else `runs/` in the working directory (an installed, not editable, package)."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]).expanduser()
    if (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT / "runs"
    return Path("runs")


# Locks ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(folder: Path, what: str = "a run") -> Iterator[None]:
    """Hold `folder`'s lock for the duration, creating the folder; `what` says what holds it, for the message
    a second writer gets.

    Raises:
        RunInUseError: another process holds the lock.
        CheckpointError: the folder cannot be created or written.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one writer per folder is up to the user
        yield
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK, "a+")  # noqa: SIM115 (held open for the lock's life)
    except OSError as error:
        raise CheckpointError(
            f"cannot write {shown(folder)} ({error.strerror or first_line(error)}); choose another --out"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunInUseError(
                f"{shown(folder)} is in use by {holder}; wait for it to finish or stop it, or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        handle.write(f"process {os.getpid()} ({what}: {command}, since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


# Run folders -----------------------------------------------------------------------------------------------


class RunFolder:
    """One run's folder: its lock, its files, and the rules for starting, resuming and replacing a run."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    def run_files(self) -> list[Path]:
        """The files of a run in this folder: checkpoints, history and every metrics file."""
        names = [self.path / name for name in (LAST, BEST, HISTORY, METRICS)]
        kept = sorted(self.path.glob("metrics-*.json")) + sorted(self.path.glob(f"{SNAPSHOTS}/epoch_*.pt"))
        return [path for path in names if path.exists()] + kept

    def snapshot(self, epoch: int) -> Path:
        return self.path / SNAPSHOTS / f"epoch_{epoch:04d}.pt"

    @contextlib.contextmanager
    def writing(self, *, resume: bool, overwrite: bool) -> Iterator[RunFolder]:
        """Hold the folder for a run: locked, and claimed (refused if it holds a run, unless `overwrite`)
        unless the run resumes."""
        with locked(self.path):
            if not resume:
                self.claim(overwrite)
            yield self

    def claim(self, overwrite: bool) -> None:
        """Refuse a folder that holds a run (finished or not), unless `overwrite`: then remove that run's files
        first, so that an interrupted retrain never leaves a mix of the old run and the new one."""
        existing = self.run_files()
        if not existing:
            return
        if not overwrite:
            raise CheckpointError(
                f"{shown(self.path)} already holds a run ({', '.join(p.name for p in existing)}); add --resume to "
                f"continue it, --overwrite to replace it, or choose another --out"
            )
        for path in existing:
            path.unlink()

    def resume(self, run) -> None:
        """Load `last.pt` into `run` (a `train.Run`), after checking it was written with the same configs and data.

        Raises:
            CheckpointError: nothing to resume, another configuration or data set, or state that does not fit.
        """
        if not self.last.is_file():
            raise CheckpointError(f"nothing to resume: no {LAST} in {shown(self.path)}; start without --resume")
        payload = load_checkpoint(self.last)
        changes = resumable_changes(self.last, payload, run.config, config_of(run.model))
        check_same_data(self.last, payload.get("provenance") or {}, run.record.provenance)
        try:
            run.restore(payload, changes)
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"{shown(self.last)} cannot be resumed ({first_line(error, 160)}); use a new --out"
            ) from None

    def save_last(self, run) -> Path:
        return save_checkpoint(self.last, run.last_state())

    def save_snapshot(self, run) -> Path:
        """A copy of `last.pt` that later epochs do not overwrite: a point to branch a cooldown from."""
        return save_checkpoint(self.snapshot(run.record.epochs_run), run.last_state())

    def save_best(self, run) -> Path:
        """best.pt: the record and the best weights."""
        return save_checkpoint(self.best, run.best_state())


def resumable_changes(path: Path, payload: dict[str, Any], config: TrainConfig, model_config: Any) -> dict[str, list]:
    """What a resume changes ({field: [then, now]}, only fields in RESUMABLE_CHANGES); refuses anything else."""
    stored = _stored_record(path, payload, model_config)
    then = stored.train_config
    changes = {
        k: [getattr(then, k), getattr(config, k)] for k in RESUMABLE_CHANGES if getattr(then, k) != getattr(config, k)
    }
    if then.replace(**{k: getattr(config, k) for k in changes}) != config:
        differing = [k for k in TrainConfig.__dataclass_fields__ if getattr(then, k) != getattr(config, k)]
        raise CheckpointError(
            f"{shown(path)} was written with another training configuration ({', '.join(differing)} differ); resume "
            f"with the same options (only --lr and --grad-clip may change, and --epochs of a constant rate) or use "
            f"a new --out"
        )
    if "epochs" in changes and (then.schedule != "constant" or then.cooldown_epochs):
        raise CheckpointError(
            f"{shown(path)} was trained for {then.epochs} epochs on a {then.schedule} schedule"
            f"{' with a cooldown' if then.cooldown_epochs else ''}, whose shape depends on its length; resume with "
            f"--epochs {then.epochs} (only a constant rate can be extended)"
        )
    if config.epochs < stored.epochs_run:
        raise CheckpointError(
            f"{shown(path)} has already run {stored.epochs_run} epochs; "
            f"resume with --epochs {stored.epochs_run} or more"
        )
    return changes


def branch(run) -> None:
    """Start `run` (a `train.Run` whose config has `branch_from`) as a cooldown of that checkpoint: its weights,
    optimiser state (momentum), schedule position, EMA and history carry over; the best epoch is chosen
    afresh among the cooldown's own epochs. The run's configuration must be the checkpoint's but for
    `BRANCH_CHANGES`, its `epochs` the checkpoint's epochs plus `cooldown_epochs`.

    Raises:
        CheckpointError: the file is unreadable, not from a constant-rate run, has no optimiser state, was
            trained with other options or on other data, or the epochs do not add up.
    """
    config = run.config
    source = Path(config.branch_from)
    payload = load_checkpoint(source)
    stored = _stored_record(source, payload, config_of(run.model))
    main = stored.train_config
    if main.schedule != "constant" or main.cooldown_epochs or main.branch_from:
        raise CheckpointError(
            f"{shown(source)} is not from a constant-rate run (schedule {main.schedule}, cooldown_epochs "
            f"{main.cooldown_epochs}); branch a cooldown from the main run's last.pt or one of its snapshots"
        )
    if "optimizer" not in payload or "scheduler" not in payload:
        raise CheckpointError(
            f"{shown(source)} holds weights only (a best.pt?); branch from the run's last.pt or a snapshot"
        )
    end = stored.epochs_run + config.cooldown_epochs
    if config.epochs != end:
        raise CheckpointError(
            f"{shown(source)} ends after epoch {stored.epochs_run}, so a cooldown of {config.cooldown_epochs} "
            f"epochs ends at epoch {end}: give --epochs {end}"
        )
    differing = [
        k
        for k in TrainConfig.__dataclass_fields__
        if k not in BRANCH_CHANGES and getattr(main, k) != getattr(config, k)
    ]
    if differing:
        raise CheckpointError(
            f"{shown(source)} was trained with other options ({', '.join(differing)} differ); a cooldown takes the "
            "main run's options, with --branch-from, --cooldown-epochs and --epochs"
        )
    check_same_data(source, payload.get("provenance") or {}, run.record.provenance)
    try:
        run.restore(payload, {})
    except (KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{shown(source)} cannot be continued ({first_line(error, 160)})") from None
    run.restart_selection()
    run.record.branched_from = {
        "checkpoint": str(source),
        "content_sha256": payload.get("content_sha256", ""),
        "epochs_run": stored.epochs_run,
        "val_accuracy": stored.history[-1]["val_accuracy"] if stored.history else None,
    }


def _stored_record(path: Path, payload: dict[str, Any], model_config: Any) -> RunRecord:
    """The record in `payload`, which must be of a run of `model_config`."""
    try:
        stored = RunRecord.from_dict(payload)
    except (ValueError, TypeError, KeyError):
        stored = None
    if stored is None or stored.model_config != model_config:
        raise CheckpointError(
            f"{shown(path)} holds another model configuration; use the same model options or another checkpoint"
        )
    return stored


def check_same_data(path: Path, stored: dict, current: dict) -> None:
    """A run resumes on the data it started with: another data set, split or subset would change what the
    validation accuracy measures halfway through."""
    differing = [key for key in DATA_IDENTITY if stored.get(key) != current.get(key)]
    if differing:
        described = ", ".join(f"{k}: {stored.get(k)!r} then, {current.get(k)!r} now" for k in differing)
        raise CheckpointError(
            f"{shown(path)} was trained on other data ({described}); resume with the same data options "
            f"(--data, --subset, --val-size, --seed) or use a new --out"
        )


def check_finite(entry: dict[str, Any], model: nn.Module, epoch: int, folder: RunFolder | None) -> None:
    """Stop before anything non-finite is saved, and say truthfully what is kept and how to go on."""
    weights_finite = math.isfinite(sum(p.detach().float().sum().item() for p in model.parameters()))
    bad = [name for name in ("train_loss", "val_loss") if not math.isfinite(entry[name])]
    if weights_finite and not bad:
        return
    what = f"{bad[0].replace('_', ' ')} became {entry[bad[0]]}" if bad else "the weights became NaN or infinite"
    if folder is not None and folder.last.is_file():
        good = RunRecord.from_dict(load_checkpoint(folder.last)).epochs_run
        kept = f"{shown(folder.last)} still holds the last good epoch ({good})"
        advice = "continue from it with --resume and a lower --lr (or a --grad-clip)"
    elif folder is not None:
        kept, advice = (
            "no epoch finished, so no checkpoint was written",
            "start again with a lower --lr (or a --grad-clip)",
        )
    else:
        kept, advice = "nothing was being saved", "train again with a lower learning rate or gradient clipping"
    raise TrainingDivergedError(f"{what} in epoch {epoch + 1}; {kept}; {advice}")


# Training entry points ---------------------------------------------------------------------------------------


def train_run(
    model: nn.Module,
    data,
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    compile: bool = False,
    precision: str = "auto",
    test: bool = True,
    snapshot_every: int = 0,
):
    """Train `model` into the run folder `out` and, with `test`, score the chosen weights once on the test set
    (written to `out/metrics.json`): the command line's `train` and the sweep's workers (`test=False`).
    Returns the `train.FitResult`.

    Raises:
        Interrupted: on Ctrl-C or SIGTERM, saying what is kept and how to go on.
    """
    from .evaluate import save_metrics, test_metrics
    from .train import fit

    folder = RunFolder(out)
    print(
        f"data: {data.provenance['description']} from {data.provenance.get('root', '-')} "
        f"({len(data.train)} train / {len(data.val)} val / {len(data.test)} test)",
        flush=True,
    )
    try:
        result = fit(
            model,
            data,
            config,
            device=device,
            out_dir=folder.path,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            compile=compile,
            precision=precision,
            snapshot_every=snapshot_every,
        )
    except KeyboardInterrupt as stop:
        kept = (
            f"finished epochs are saved in {shown(folder.last)}: add --resume to continue"
            if folder.last.is_file()
            else "no epoch had finished, so nothing was saved"
        )
        raise Interrupted(f"interrupted; {kept}", exit_code(stop)) from None
    write_json(folder.path / HISTORY, result.history)
    if not test:
        return result
    try:
        metrics = test_metrics(result.model, data.test, result.record, device=device)
    except KeyboardInterrupt as stop:
        raise Interrupted(
            f"interrupted during the test evaluation; training had finished and {shown(folder.best)} is written: "
            f"run `evaluate --checkpoint {shown(folder.best)}` to score it",
            exit_code(stop),
        ) from None
    save_metrics(metrics, folder.path / METRICS)
    print(
        f"best epoch {result.best_epoch} (val accuracy {result.record.best_val_accuracy:.4f}); "
        f"test accuracy {metrics['accuracy']:.4f}; wrote {shown(folder.path)}/best.pt, history.json, metrics.json"
    )
    return result


def exit_code(stop: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP (see `cli.terminate_as_interrupt`)."""
    return getattr(stop, "exit_code", 130)


@dataclass
class FinishedRun:
    """A run that a notebook can show: its record, and its model where the weights are at hand."""

    record: RunRecord
    model: nn.Module | None  # None for a shipped record, which has no weights
    source: str  # where it came from, in words
    path: Path | None = None  # the checkpoint or record file
    test_predictions: torch.Tensor | None = None  # a shipped record's prediction for every test image

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.record.history


def find_finished_run(
    model_config: Any, train_config: TrainConfig, runs: str | Path | None = None
) -> FinishedRun | None:
    """A finished run trained with exactly these configs: the shipped checkpoint, else `runs/*/best.pt`
    (default: `runs_dir()`), with its weights loaded; None when no run matches."""
    candidates = [pretrained.PRETRAINED] if pretrained.pretrained_available() else []
    candidates += sorted(Path(runs if runs is not None else runs_dir()).glob("*/best.pt"))
    wanted = spec_for(model_config)
    for path in candidates:
        try:
            payload = load_checkpoint(path)
            record = RunRecord.from_dict(payload)
            same = (
                stored_architecture(payload) == wanted.name
                and record.model_config == model_config
                and record.train_config == train_config
            )
            if same:
                model = model_from_checkpoint(payload, str(path)).eval()
                where = (
                    "the checkpoint shipped with the package"
                    if path == pretrained.PRETRAINED
                    else (f"the finished run {path.parent.name}/{path.name} in the runs folder")
                )
                return FinishedRun(record, model, where, path)
        except (ValueError, TypeError, KeyError, CheckpointError):
            continue  # unreadable, or written by another version of the configs
    return None


def train_or_reuse(
    model_config: Any,
    train_config: TrainConfig,
    data,
    *,
    folder: str | os.PathLike,
    record: str | None = None,
    reuse: bool = True,
    log=print,
    **fit_options: Any,
) -> FinishedRun:
    """What a chapter that shows a trained model needs: a finished run with exactly these configs if one is on
    disk (the shipped checkpoint, or `runs/*/best.pt`), else the shipped run record named `record` (history and
    test predictions, no weights), else train into `folder` (under `runs_dir()` unless absolute), resuming it
    if it was interrupted. `reuse=False` always trains (the quick mode). Says in one line which it did."""
    from .registry import build_model
    from .train import fit

    if reuse:
        found = find_finished_run(model_config, train_config)
        if found is not None:
            log(f"reusing {found.source}: {found.record.wall_seconds / 60:.0f} minutes on {found.record.hardware}")
            return found
        shipped = load_run_record(record) if record else None
        if shipped is not None:
            log(f"using the run record {record!r} shipped with the package (history and test predictions)")
            return shipped
    target = RunFolder(Path(runs_dir(), folder))
    resume = reuse and _interrupted_run_of(target, model_config, train_config)
    result = fit(
        build_model(model_config, train_config.seed),
        data,
        train_config,
        out_dir=target.path,
        resume=resume,
        overwrite=not resume,
        **fit_options,
    )
    trained = f"a run trained here into {target.path.name}/"
    log(f"{trained}: {len(result.history)} epochs, {result.record.wall_seconds / 60:.1f} min")
    return FinishedRun(result.record, result.model.eval(), trained, result.checkpoint)


def _interrupted_run_of(folder: RunFolder, model_config: Any, train_config: TrainConfig) -> bool:
    """True when `folder` holds an unfinished run of exactly these configs, which can be resumed."""
    if folder.best.is_file() or not folder.last.is_file():
        return False
    try:
        record = RunRecord.from_dict(load_checkpoint(folder.last))
    except (ValueError, TypeError, KeyError, CheckpointError):
        return False
    return record.model_config == model_config and record.train_config == train_config


# Records shipped with the package --------------------------------------------------------------------------


def run_record(payload: dict[str, Any], model: Any, data: Any, note: str = "") -> dict[str, Any]:
    """A finished run without its weights: its record (configs, history, hardware, data provenance without the
    local path), its test metrics, and its prediction for every test image (so that per-image comparisons
    need no weights). A run that predates the per-epoch diagnostics gets those of its kept weights in its best
    epoch's entry, marked `measured_after_training`, so that a chapter can show them without the weights."""
    from .diagnostics import measure, probe_images
    from .evaluate import evaluate, predict_logits

    record = RunRecord.from_dict(payload)
    best = record.history[record.best_epoch - 1] if 0 < record.best_epoch <= len(record.history) else None
    probe = probe_images(record.model_config, data.val)
    if best is not None and "cls_spread" not in best and probe is not None:
        found = measure(model, probe=probe, clean=None, device=torch.device("cpu"))
        best.update(found, measured_after_training=True)
    record.note = note or record.note
    record.provenance = {k: v for k, v in data.provenance.items() if k != "root"}
    record.test_metrics = evaluate(model, data.test)
    predictions = "".join(str(p) for p in predict_logits(model, data.test).argmax(1).tolist())
    return {**record.shipped(), "test_predictions": predictions}


def _record_path(name: str, kind: str, folder: str | Path | None) -> Path:
    return Path(folder or RECORDS) / f"{name}_{kind}.json"


def _read_record(name: str, kind: str, folder: str | Path | None) -> dict[str, Any] | None:
    """A shipped `<name>_<kind>.json`, None when there is none, one line when it is unreadable."""
    path = _record_path(name, kind, folder)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable {kind} record ({error}); restore it from the repository"
        ) from None


def write_run_record(record: dict[str, Any], name: str, folder: str | Path | None = None) -> Path:
    return write_json(_record_path(name, "run", folder), record)


def load_run_record(name: str, folder: str | Path | None = None) -> FinishedRun | None:
    """A shipped run record (`<name>_run.json`) as a `FinishedRun` without a model, or None when there is none.
    (The record of a run still in progress has no test predictions.)"""
    values = _read_record(name, "run", folder)
    if values is None:
        return None
    try:
        record = RunRecord.from_dict(values)
        shipped = values.get("test_predictions")  # a run in progress ships no test predictions
        predictions = torch.tensor([int(c) for c in shipped]) if shipped is not None else None
    except (ValueError, TypeError, KeyError) as error:
        path = _record_path(name, "run", folder)
        raise CheckpointError(
            f"{path} is not a readable run record ({first_line(error)}); restore it from the repository"
        ) from None
    return FinishedRun(record, None, f"the run record {name!r}", _record_path(name, "run", folder), predictions)


def sweep_record(results: dict[str, Any], grid: str, note: str = "") -> dict[str, Any]:
    """A sweep's `results.json` made small enough to ship: every recipe's settings and scores, the shared
    base of the grid, and per-epoch training and validation accuracy; no run-folder paths, no weights."""
    from .sweep import SHIPPED_ROW

    rows = results["recipes"]
    finished = [row for row in rows if row["status"] == "finished"]
    recipes = []
    for row in rows:
        compact = {key: row[key] for key in SHIPPED_ROW if key in row}
        if row["status"] == "finished":
            compact.update(
                train_images_per_second=round(row["images_per_second"]),
                train_accuracy=[round(h["train_accuracy"], 4) for h in row["history"]],
                val_accuracy=[round(h["val_accuracy"], 4) for h in row["history"]],
            )
        else:
            compact["error"] = row.get("error", "")
        recipes.append(compact)
    first = finished[0] if finished else rows[0]
    return {
        "grid": grid,
        "note": note,
        "base_train_config": _shared_base(rows, "train_config"),
        "model": first["model"],
        "model_config": _shared_base(rows, "model_config"),
        "hardware": first.get("hardware", ""),
        "provenance": {k: v for k, v in first.get("provenance", {}).items() if k != "root"},
        "recipes": recipes,
    }


def _shared_base(rows: list[dict[str, Any]], part: str) -> dict[str, Any]:
    """The grid's base settings of one config: each setting as a recipe that does not override it has it
    (a setting every recipe overrides has no base value to report, and is left out)."""
    base = {}
    for key in rows[0][part]:
        plain = next((row for row in rows if key not in row["overrides"]), None)
        if plain is not None:
            base[key] = plain[part][key]
    return base


def write_sweep_record(record: dict[str, Any], name: str, folder: str | Path | None = None) -> Path:
    return write_json(_record_path(name, "sweep", folder), record)


def load_sweep_record(name: str, folder: str | Path | None = None) -> dict[str, Any] | None:
    """A shipped sweep record (`<name>_sweep.json`), or None when there is none."""
    return _read_record(name, "sweep", folder)


def load_benchmark(name: str, folder: str | Path | None = None) -> dict[str, Any] | None:
    """Shipped results of `benchmarks/train_throughput.py` (`<name>_benchmark.json`), or None."""
    return _read_record(name, "benchmark", folder)
