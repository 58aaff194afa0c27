"""A small trainer that knows nothing of the model: SGD, warmup + cosine, early stopping.

`fit` trains on `data.train`, selects on `data.val` (never on the test set), keeps the best weights,
and, given an output folder, writes `last.pt` after every epoch (resumable, at most one epoch lost)
and `best.pt` at the end.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .augment import mix_batch, random_erasing
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import CIFAR10, CLASSES, Split, batches
from .errors import CheckpointError, TrainingDivergedError, first_line
from .registry import architecture_of

LAST = "last.pt"
BEST = "best.pt"


def select_device(preferred: str | torch.device | None = None) -> torch.device:
    """`preferred` if given (and not 'auto'), else CUDA, then MPS, then CPU.

    Raises:
        ValueError: an unknown device name, or a device this machine does not have.
    """
    if preferred not in (None, "auto"):
        try:
            device = torch.device(preferred)
        except (RuntimeError, TypeError):
            raise ValueError(f"unknown device {preferred!r}; use cpu, cuda, cuda:N, mps or auto") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {preferred!r} was asked for but CUDA is not available; use --device cpu or auto")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(
                f"device {preferred!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)"
            )
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {preferred!r} was asked for but MPS is not available; use --device cpu or auto")
        if device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device {preferred!r} is not supported; use cpu, cuda, cuda:N, mps or auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores ({device.type})"


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimiser step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def compile_for(model: nn.Module, device: torch.device) -> nn.Module:
    """`torch.compile` on CUDA (the training step is then captured whole in a CUDA graph, see `TrainStep`);
    elsewhere the eager model, with a note why.

    The returned module shares its parameters with `model`, so optimiser and checkpoints keep using `model`.
    """
    if device.type != "cuda":
        warnings.warn(f"compile is used on CUDA only; training eagerly on {device.type}", stacklevel=2)
        return model
    return torch.compile(model)


def make_optimizer(model: nn.Module, config: TrainConfig, capturable: bool = False) -> torch.optim.Optimizer:
    """SGD (or AdamW) with weight decay on weight matrices only (not biases, norms, CLS token or position embeddings).

    Frozen parameters (requires_grad False) are left out, so fine-tuning only the last blocks works.
    `capturable` (CUDA) makes a fused optimiser whose learning rate is a tensor on the device, so that a
    CUDA graph of the step reads the schedule's current value instead of the one it was captured with.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            is_matrix = param.ndim >= 2 and not name.endswith(("cls_token", "pos_embed"))
            (decay if is_matrix else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr: float | torch.Tensor = config.lr
    if capturable:  # the learning rate lives on the device, where the captured step reads it
        lr = torch.tensor(config.lr, device=next(model.parameters()).device)
    if config.optimizer == "adamw":
        extra = {"capturable": True, "foreach": True} if capturable else {}
        return torch.optim.AdamW(groups, lr=lr, **extra)
    extra = {"fused": True} if capturable else {}
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov, **extra)


class EMA:
    """An exponential moving average of a model's weights (Polyak averaging): after every optimiser step,
    `average = decay * average + (1 - decay) * weights`. `ema.model` is the averaged copy, in eval mode.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        pairs = [
            (a, w)
            for a, w in zip(self.model.state_dict().values(), model.state_dict().values())
            if a.is_floating_point()
        ]
        self._average, self._live = [a for a, _ in pairs], [w for _, w in pairs]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self._average, self._live, 1.0 - self.decay)


@dataclass
class FitResult:
    """What `fit` returns: the model with its best weights, and how it got there."""

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int  # 1-based epoch whose weights the model now holds
    stopped_early: bool
    checkpoint: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def validate(model: nn.Module, split: Split, device: torch.device, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on `split` (no augmentation, no smoothing)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for images, labels in batches(split, batch_size, device=device):
        with _autocast(device):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
    return loss_sum / len(split), correct / len(split)


def _autocast(device: torch.device):
    """bfloat16 on CUDA; the cast cache is off because a captured CUDA graph cannot use it."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return torch.autocast("cpu", enabled=False)


def _training_batches(split: Split, config: TrainConfig, device: torch.device, generator: torch.Generator):
    """One epoch of batches as the step sees them: (images, targets, labels), augmented, normalised,
    erased and mixed. Targets are the labels, or soft labels (B, num_classes) with mixup or cutmix."""
    drop_last = len(split) >= config.batch_size
    for images, labels in batches(
        split,
        config.batch_size,
        device=device,
        shuffle=True,
        augment=config.augment,
        generator=generator,
        drop_last=drop_last,
        randaugment_n=config.randaugment_n,
        randaugment_m=config.randaugment_m,
    ):
        if config.random_erasing > 0:
            images = random_erasing(images, config.random_erasing, generator)
        targets = labels
        if config.mixup > 0 or config.cutmix > 0:
            images, targets = mix_batch(
                images, labels, len(CLASSES), mixup=config.mixup, cutmix=config.cutmix, generator=generator
            )
        yield images, targets, labels


class TrainStep:
    """One training step: forward, loss, backward, gradient clipping, optimiser update and EMA, with the
    epoch's loss and correct predictions summed on the device (read once per epoch, no sync per step).

    `forward` is the model or its compiled version. With `graph=True` (CUDA) the whole step is captured
    in a CUDA graph after a few warm-up steps and then replayed: one launch per step instead of hundreds.
    The graph needs static shapes (the trainer drops the last partial batch) and a capturable optimiser.
    """

    WARMUP_STEPS = 3

    def __init__(
        self,
        model,
        forward,
        optimizer,
        config: TrainConfig,
        device: torch.device,
        ema: EMA | None = None,
        graph: bool = False,
    ) -> None:
        self.model, self.forward, self.optimizer, self.ema = model, forward, optimizer, ema
        self.config, self.device = config, device
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0
        self.graph, self._graph, self._static, self._calls = graph, None, None, 0

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()
        self.seen = 0

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> None:
        self.seen += labels.shape[0]
        if not self.graph:
            self._step(images, targets, labels)
            return
        if self._calls < self.WARMUP_STEPS:
            self._calls += 1
            self._on_side_stream(self._step, images, targets, labels)
            return
        if self._graph is None:
            self._capture(images, targets, labels)
            if self._graph is None:  # the capture failed: this step runs eagerly
                self._step(images, targets, labels)
                return
        for static, value in zip(self._static, (images, targets, labels)):
            static.copy_(value)
        self._graph.replay()

    def _step(self, images: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> None:
        with _autocast(self.device):
            logits = self.forward(images)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        self.loss_sum += loss.detach() * labels.shape[0]
        self.correct += (logits.argmax(dim=1) == labels).sum()

    def _on_side_stream(self, function, *args) -> None:
        """Warm-up work before a capture runs on a side stream, as the CUDA-graph documentation asks."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            function(*args)
        torch.cuda.current_stream(self.device).wait_stream(stream)

    def _capture(self, images: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> None:
        self._static = tuple(t.clone() for t in (images, targets, labels))
        self.optimizer.zero_grad(set_to_none=True)
        self._graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self._graph):
                self._step(*self._static)  # recorded, not run: the replay that follows runs it
        except RuntimeError as error:  # an operation that cannot be captured: train on without the graph
            warnings.warn(f"CUDA graph capture failed ({first_line(error, 200)}); training on without it", stacklevel=2)
            self.graph, self._graph = False, None
            torch.cuda.synchronize(self.device)


def _train_epoch(
    step: TrainStep, split: Split, config: TrainConfig, device: torch.device, generator, bar, scheduler
) -> tuple[float, float, int]:
    """Train one epoch through `step`; with a CUDA graph the epoch's batches are prepared first, so that no
    host synchronisation (mixup's draws) falls between two replays."""
    step.model.train()
    step.reset()
    prepared = _training_batches(split, config, device, generator)
    if step.graph:
        prepared = list(prepared)
    for images, targets, labels in prepared:
        step(images, targets, labels)
        scheduler.step()
        if bar is not None:
            bar.update(labels.shape[0])
    seen = max(step.seen, 1)
    return step.loss_sum.item() / seen, step.correct.item() / seen, step.seen


def fit(
    model: nn.Module,
    data: CIFAR10,
    config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log_epochs: bool = True,
    compile: bool = False,
) -> FitResult:
    """Train `model` on `data.train`, early-stop on `data.val`, and return it holding its best weights.

    `progress` shows tqdm bars; `log_epochs` prints one summary line per epoch.
    With `out_dir`, `last.pt` is rewritten after every epoch; `resume=True` continues from it (a changed
    `lr` or `grad_clip` is allowed and recorded; anything else must match). A folder that already holds
    a run is refused unless `overwrite=True`, which first removes that run's files.
    `compile=True` trains through `torch.compile` on CUDA, with the whole step captured in a CUDA graph,
    and falls back to eager elsewhere. Shuffling, augmentation and dropout are seeded per epoch, so on
    the CPU a resumed run repeats the uninterrupted one exactly.
    With `config.ema`, validation, early stopping and the saved best weights use the averaged weights.

    Raises:
        TrainingDivergedError: the loss or the weights became NaN or infinite; nothing non-finite is saved.
        CheckpointError: `resume` was asked for but `last.pt` is missing, corrupt or from another setup,
            or `out_dir` holds a run and neither `resume` nor `overwrite` was given.
    """
    from tqdm.auto import tqdm

    device = select_device(device)
    model.to(device)
    train = data.train.to(device) if device.type != "cpu" else data.train
    out_dir = Path(out_dir) if out_dir is not None else None
    graph = compile and device.type == "cuda"
    optimizer = make_optimizer(model, config, capturable=graph)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=max(len(train) // config.batch_size, 1))
    ema = EMA(model, config.ema) if config.ema > 0 else None
    evaluated = ema.model if ema is not None else model  # what validation sees and what is kept as best
    model_config = getattr(model, "config", None)
    state = {
        "epoch": 0,
        "history": [],
        "best_val_accuracy": -1.0,
        "best_epoch": 0,
        "bad_epochs": 0,
        "best_model": _cpu_copy(evaluated),
        "wall_seconds": 0.0,
        "config_changes": [],
    }
    if resume:
        state = _restore(out_dir, model, optimizer, scheduler, ema, config, data, state)
    elif out_dir is not None:
        _claim_folder(out_dir, overwrite)
    _set_learning_rates(optimizer, scheduler, config)
    common = {
        "architecture": architecture_of(model),
        "model_config": model_config.to_dict() if model_config is not None else None,
        "train_config": config.to_dict(),
        "provenance": data.provenance,
        "hardware": describe_hardware(device),
    }
    forward = compile_for(model, device) if compile else model
    step = TrainStep(model, forward, optimizer, config, device, ema, graph=graph)
    stopped_early = False
    for epoch in range(state["epoch"], config.epochs):
        if 0 < config.patience <= state["bad_epochs"]:
            stopped_early = True
            break
        record = _epoch(step, evaluated, train, data.val, scheduler, config, device, epoch, progress)
        _check_finite(record, model, epoch, out_dir)
        state["history"].append(record)
        state["wall_seconds"] += record["seconds"]
        if record["val_accuracy"] > state["best_val_accuracy"]:
            state.update(
                best_val_accuracy=record["val_accuracy"],
                best_epoch=epoch + 1,
                bad_epochs=0,
                best_model=_cpu_copy(evaluated),
            )
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if log_epochs:
            tqdm.write(
                f"epoch {epoch + 1:3d}  train loss {record['train_loss']:.3f} acc {record['train_accuracy']:.3f}  "
                f"val loss {record['val_loss']:.3f} acc {record['val_accuracy']:.3f}  {record['seconds']:.1f}s"
            )
        if out_dir is not None:
            extra = {"ema": ema.model.state_dict()} if ema is not None else {}
            save_checkpoint(
                out_dir / LAST,
                {
                    **common,
                    **state,
                    **extra,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                },
            )

    model.load_state_dict(state["best_model"])
    info = {
        **common,
        "best_val_accuracy": state["best_val_accuracy"],
        "wall_seconds": state["wall_seconds"],
        "epochs_run": state["epoch"],
        "stopped_early": stopped_early,
        "config_changes": state["config_changes"],
    }
    best_path = None
    if out_dir is not None:
        best_path = save_checkpoint(
            out_dir / BEST,
            {
                **info,
                "model": state["best_model"],
                "history": state["history"],
                "best_epoch": state["best_epoch"],
            },
        )
    return FitResult(model, state["history"], state["best_epoch"], stopped_early, best_path, info)


RUN_FILES = (LAST, BEST, "history.json", "metrics.json")
RESUMABLE_CHANGES = ("lr", "grad_clip")  # what a resumed run may change, e.g. after a divergence


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _claim_folder(out_dir: Path, overwrite: bool) -> None:
    """Refuse a folder that holds a run (finished or not), unless `overwrite`: then remove that run's files first,
    so that an interrupted retrain never leaves a mix of the old run and the new one."""
    existing = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not existing:
        return
    if not overwrite:
        raise CheckpointError(
            f"{out_dir} already holds a run ({', '.join(existing)}); add --resume to continue it, "
            f"--overwrite to replace it, or choose another --out"
        )
    for name in existing:
        (out_dir / name).unlink()


def _check_finite(record: dict[str, float], model: nn.Module, epoch: int, out_dir: Path | None) -> None:
    """Stop before anything non-finite is saved, and say truthfully what is kept and how to go on."""
    weights_finite = math.isfinite(sum(p.detach().float().sum().item() for p in model.parameters()))
    bad = [name for name in ("train_loss", "val_loss") if not math.isfinite(record[name])]
    if weights_finite and not bad:
        return
    what = f"{bad[0].replace('_', ' ')} became {record[bad[0]]}" if bad else "the weights became NaN or infinite"
    last = out_dir / LAST if out_dir is not None else None
    if last is not None and last.is_file():
        kept = f"{last} still holds the last good epoch ({load_checkpoint(last)['epoch']})"
        advice = "continue from it with --resume and a lower --lr (or a --grad-clip)"
    elif last is not None:
        kept, advice = (
            "no epoch finished, so no checkpoint was written",
            "start again with a lower --lr (or a --grad-clip)",
        )
    else:
        kept, advice = "nothing was being saved", "train again with a lower learning rate or gradient clipping"
    raise TrainingDivergedError(f"{what} in epoch {epoch + 1}; {kept}; {advice}")


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warmup then cosine (or constant), as `lr_factor` describes."""
    schedule = partial(
        lr_factor,
        warmup_steps=config.warmup_epochs * steps_per_epoch,
        total_steps=config.epochs * steps_per_epoch,
        schedule=config.schedule,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _epoch(step: TrainStep, evaluated, train, val, scheduler, config, device, epoch, progress) -> dict[str, float]:
    """One epoch: train (seeded by the epoch number), then validate `evaluated`; the history record."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    generator = torch.Generator(device=train.labels.device).manual_seed(config.seed * 100_003 + epoch)
    torch.manual_seed(config.seed * 100_003 + epoch)  # dropout and stochastic depth
    lr = float(step.optimizer.param_groups[0]["lr"])
    bar = (
        tqdm(total=len(train), desc=f"epoch {epoch + 1}/{config.epochs}", unit="img", leave=False) if progress else None
    )
    try:
        train_loss, train_acc, seen = _train_epoch(step, train, config, device, generator, bar, scheduler)
    finally:
        if bar is not None:
            bar.close()
    train_seconds = time.perf_counter() - started
    val_loss, val_acc = validate(evaluated, val, device)
    seconds = time.perf_counter() - started
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "seconds": seconds,
        "images_per_second": seen / seconds,
        "train_images_per_second": seen / train_seconds,
    }


def _restore(out_dir, model, optimizer, scheduler, ema, config, data, default_state) -> dict:
    if out_dir is None:
        raise ValueError("resume=True needs out_dir, the folder holding last.pt")
    path = out_dir / LAST
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: no {LAST} in {out_dir}; start without --resume")
    payload = load_checkpoint(path)
    stored = _stored_config(TrainConfig, payload.get("train_config"))
    changes = (
        {}
        if stored is None
        else {
            k: [getattr(stored, k), getattr(config, k)]
            for k in RESUMABLE_CHANGES
            if getattr(stored, k) != getattr(config, k)
        }
    )
    if stored is None or stored.replace(**{k: getattr(config, k) for k in changes}) != config:
        raise CheckpointError(
            f"{path} was written with another training configuration; resume with the same options "
            f"(only {' and '.join('--' + k.replace('_', '-') for k in RESUMABLE_CHANGES)} may change) "
            f"or use a new --out"
        )
    model_config = getattr(model, "config", None)
    if model_config is not None and _stored_config(type(model_config), payload.get("model_config")) != model_config:
        raise CheckpointError(
            f"{path} holds another model configuration; resume with the same options or use a new --out"
        )
    _check_same_data(path, payload.get("provenance") or {}, data.provenance)
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if ema is not None:
            ema.model.load_state_dict(payload["ema"])
    except (KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} cannot be resumed ({first_line(error, 160)}); use a new --out") from None
    state = {key: payload.get(key, value) for key, value in default_state.items()}
    if changes:
        state["config_changes"] = [*state["config_changes"], {"from_epoch": state["epoch"] + 1, **changes}]
    return state


def _set_learning_rates(optimizer: torch.optim.Optimizer, scheduler, config: TrainConfig) -> None:
    """After loading: the schedule follows `config.lr` (which a resume may change), and each group's rate is a
    float, or a device tensor where the optimiser is fused for a CUDA graph."""
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    scheduler.base_lrs = [config.lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr
        value = config.lr * factor
        if group.get("fused") or group.get("capturable"):
            group["lr"] = torch.tensor(value, device=group["params"][0].device)
        else:
            group["lr"] = value


DATA_IDENTITY = ("source", "fingerprint", "val_size", "split_seed", "subset")


def _then_now(key: str, stored: dict, current: dict) -> str:
    return f"{key}: {stored.get(key)!r} then, {current.get(key)!r} now"


def _check_same_data(path: Path, stored: dict, current: dict) -> None:
    """A run resumes on the data it started with: another data set, split or subset would change what the
    validation accuracy measures halfway through."""
    differing = [key for key in DATA_IDENTITY if stored.get(key) != current.get(key)]
    if differing:
        raise CheckpointError(
            f"{path} was trained on other data ({', '.join(_then_now(k, stored, current) for k in differing)}); "
            f"resume with the same data options (--data, --subset, --val-size, --seed) or use a new --out"
        )


def _stored_config(cls, values: dict | None):
    """The config a checkpoint recorded (fields it lacks take today's defaults), or None if unreadable."""
    try:
        return cls.from_dict(values or {})
    except (ValueError, TypeError):
        return None
