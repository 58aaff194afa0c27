"""A small trainer that knows nothing of the model: SGD, warmup + cosine, early stopping.

The pieces, in the order a run uses them: `make_optimizer` and `make_scheduler`; `TrainStep`, one
optimiser step (public, so that chapter 6 can print it); `train_epoch`; `validate`; and `fit`, which
trains on `data.train`, selects on `data.val` (never on the test set), keeps the best weights and, given
an output folder, checkpoints every epoch through `runs.RunFolder`. `Run` holds one run's state, so that
`fit` and the stacked trainer of `vit_tutorial.stacked` share it. On CUDA, `graphs.GraphedStep` replays
the step as one CUDA graph.

Each history entry (one per epoch) holds: epoch, lr, train_loss, train_accuracy (on the augmented batches),
val_loss, val_accuracy, clipped (share of steps whose gradient norm was clipped), seconds,
images_per_second and train_images_per_second, and the diagnostics of `diagnostics.measure`
(qk_norms, cls_spread, train_clean_accuracy).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import typing
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .augment import Pipeline
from .config import TrainConfig
from .data import CIFAR10, CLASSES, Split, batches
from .devices import autocast, describe_hardware, resolve_precision, select_device
from .diagnostics import CLEAN_TRAIN_IMAGES, gone_uniform, measure, probe_images, query_key_weights, revive_collapsed
from .distill import distillation_loss, load_teacher
from .errors import CheckpointError
from .record import RunRecord
from .registry import architecture_of, config_of

__all__ = ["EMA", "FitResult", "Run", "TrainStep", "fit", "lr_factor", "make_optimizer", "make_scheduler"]


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str, cooldown_steps: int = 0) -> float:
    """Multiplier of the peak learning rate at optimiser step `step` (0-based).

    Linear warmup, then cosine decay to 0 over the remaining steps, or constant. A constant schedule with
    `cooldown_steps` is warmup-stable-decay (Hägele et al. 2024): its last `cooldown_steps` steps decay the
    rate to 0 in the shape `1 - sqrt(progress)`, which that paper found best of the shapes it tried.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        into_cooldown = step - (total_steps - cooldown_steps)
        if cooldown_steps and into_cooldown >= 0:
            return 1.0 - math.sqrt(min(into_cooldown / cooldown_steps, 1.0))
        return 1.0
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warmup then cosine, constant, or constant then a cooldown, as `lr_factor` describes."""
    schedule = partial(
        lr_factor,
        warmup_steps=config.warmup_epochs * steps_per_epoch,
        total_steps=config.epochs * steps_per_epoch,
        schedule=config.schedule,
        cooldown_steps=config.cooldown_epochs * steps_per_epoch,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def decays(name: str, param: torch.Tensor, scope: str) -> bool:
    """Whether weight decay applies to the parameter `name` under `TrainConfig.decay_scope`: "matrices" is every
    weight matrix but the CLS token and the position embeddings; "blocks" only the weight matrices inside the
    encoder blocks (the MLP's, the attention output's and the fused query/key/value matrix, whose query and
    key rows `make_optimizer` then spares); "blocks+head" those and the classifier's weight."""
    if param.ndim < 2:  # biases and norms never decay
        return False
    if scope == "matrices":
        return not name.endswith(("cls_token", "pos_embed"))
    return name.startswith("blocks.") or (scope == "blocks+head" and name == "head.weight")


def make_optimizer(model: nn.Module, config: TrainConfig, capturable: bool = False) -> torch.optim.Optimizer:
    """SGD (or AdamW) with weight decay on the weights `decays` names for `config.decay_scope`.

    Frozen parameters (requires_grad False) are left out, so fine-tuning only the last blocks works.
    Where the query and key rows decay differently from the value rows (`qk_decay` other than 1, or a
    `decay_scope` other than "matrices", which spares them), the attention's fused query/key/value
    matrices are decayed row by row instead (`QueryKeyDecay`): their query and key rows by
    `qk_decay * weight_decay` (0 outside "matrices"), the value rows by `weight_decay`. `capturable` (CUDA)
    makes a fused optimiser whose learning rate is a tensor on the device, so that a CUDA graph of the step
    reads the schedule's current value instead of the one it was captured with.

    Raises:
        ValueError: a `decay_scope` other than "matrices" for a model without the ViT's encoder blocks.
    """
    scope = config.decay_scope
    names = [name for name, _ in model.named_parameters()]
    if scope != "matrices" and not any(name.startswith("blocks.") for name in names):
        raise ValueError(
            f"decay_scope {scope!r} names the encoder blocks of the book's ViT, which {type(model).__name__} does "
            "not have; use decay_scope 'matrices'"
        )
    qk_factor = config.qk_decay if scope == "matrices" else 0.0
    row_wise = {id(weight) for weight, _ in query_key_weights(model)} if qk_factor != 1.0 else set()
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if decays(name, param, scope) and id(param) not in row_wise else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr: float | torch.Tensor = config.lr
    if capturable:  # the learning rate lives on the device, where the captured step reads it
        lr = torch.tensor(config.lr, device=next(model.parameters()).device)
    extra: dict[str, Any]
    if config.optimizer == "adamw":
        extra = {"capturable": True, "foreach": True} if capturable else {}
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=lr, **extra)
    else:
        extra = {"fused": True} if capturable else {}
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov, **extra)
    if row_wise:
        QueryKeyDecay(model, optimizer, config, qk_factor)
    return optimizer


class QueryKeyDecay:
    """Weight decay of the fused query/key/value matrices, row by row, run just before each optimiser step.

    SGD's weight decay adds `wd * w` to the gradient (before momentum); AdamW's shrinks the weight by
    `lr * wd * w` (decoupled). This does the same with a per-row `wd`: `qk_factor * weight_decay` for the
    query and key rows, `weight_decay` for the value rows. The matrices sit in the optimiser's group
    without decay, so nothing is decayed twice.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, qk_factor: float
    ) -> None:
        self.decoupled = config.optimizer == "adamw"
        self.pairs = []
        for weight, d in query_key_weights(model):
            if weight.requires_grad:
                rows = torch.full((weight.shape[0], 1), config.weight_decay, device=weight.device)
                rows[: 2 * d] *= qk_factor
                self.pairs.append((weight, rows))
        self.group = optimizer.param_groups[1]  # the learning rate these matrices are stepped with
        optimizer.register_step_pre_hook(self)

    @torch.no_grad()
    def __call__(self, optimizer, args, kwargs) -> None:
        for weight, rows in self.pairs:
            if weight.grad is None:
                continue
            if self.decoupled:
                weight.mul_(1 - self.group["lr"] * rows)
            else:
                weight.grad.addcmul_(weight, rows)


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


class TrainStep:
    """One training step: forward, loss, backward, gradient clipping, weight decay, optimiser update, EMA.

    The epoch's loss, correct predictions and clipped steps are summed on the device, so nothing waits for
    the device mid-epoch; `totals` reads them once. `forward` is the model or its compiled version;
    `teacher`, if given, adds its predictions to the loss (`distill.distillation_loss`). The step has only
    tensor operations, so `graphs.GraphedStep` can capture it whole in a CUDA graph.
    """

    def __init__(
        self,
        model: nn.Module,
        forward: nn.Module | None,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        device: torch.device,
        ema: EMA | None = None,
        *,
        precision: str = "fp32",
        teacher: nn.Module | None = None,
    ) -> None:
        self.model, self.optimizer, self.config = model, optimizer, config
        self.device, self.precision = device, precision
        self.forward = forward if forward is not None else model
        self.ema, self.teacher = ema, teacher
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.clipped = torch.zeros((), device=device, dtype=torch.long)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> None:
        with autocast(self.device, self.precision):
            logits = self.forward(images)
        loss = self.loss(logits, targets, images)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.update(loss, logits, labels)

    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """After the backward pass: clip the gradient, step the optimiser and the EMA, add to the epoch's sums."""
        if self.config.grad_clip > 0:
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.clipped += norm > self.config.grad_clip
        self.optimizer.step()  # QueryKeyDecay, if any, runs first
        if self.ema is not None:
            self.ema.update()
        self.loss_sum += loss.detach() * labels.shape[0]
        self.correct += (logits.argmax(dim=1) == labels).sum()

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the targets (class indices, or soft labels after mixup / CutMix), and the
        teacher's term when there is a teacher."""
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.config.label_smoothing)
        if self.teacher is None:
            return loss
        with torch.no_grad(), autocast(self.device, "bf16" if self.device.type == "cuda" else self.precision):
            taught = self.teacher(images)
        return distillation_loss(logits, taught, loss, self.config)

    def reset(self) -> None:
        for total in (self.loss_sum, self.correct, self.clipped):
            total.zero_()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def totals(self, images: int, steps: int) -> dict[str, float]:
        """Mean loss, accuracy and clipped share since `reset`, over `images` images in `steps` steps."""
        return {
            "train_loss": self.loss_sum.item() / max(images, 1),
            "train_accuracy": self.correct.item() / max(images, 1),
            "clipped": self.clipped.item() / max(steps, 1),
        }


def epoch_batches(run: Run, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of batches as the step sees them, (images, targets, labels): shuffled and transformed by
    the run's `augment.Pipeline` with a generator seeded by the epoch number alone, so that a resumed run
    sees the same batches. The last partial batch is dropped (static shapes for a CUDA graph)."""
    split, config = run.train, run.config
    generator = torch.Generator(device=split.labels.device).manual_seed(config.seed * 100_003 + epoch)
    drop_last = len(split) >= config.batch_size
    for images, labels in batches(
        split, config.batch_size, shuffle=True, generator=generator, drop_last=drop_last, normalise=False
    ):
        images, targets = run.pipeline(images, labels, generator, run.device)
        yield images, targets, labels.to(run.device, non_blocking=True)


def train_epoch(step, prepared: Iterable, scheduler, bar=None, meanwhile=None, images_per_step: int = 0) -> int:
    """Run `step` (a `TrainStep`, a `graphs.GraphedStep` or a `stacked.StackedStep`) over one epoch's batches
    from a fresh `step.reset()`, advancing the learning-rate schedule after every step; returns the number
    of steps (their sums are read with `step.totals`).

    `meanwhile` is called once every step has been issued, before their results are read: on a GPU the
    steps are still running then, and the next epoch can be prepared alongside.
    """
    step.reset()
    steps = 0
    for batch in prepared:
        step(*batch)
        scheduler.step()
        steps += 1
        if bar is not None:
            bar.update(images_per_step)
    if meanwhile is not None:
        meanwhile()
    return steps


def training_entry(epoch: int, lr: float, totals: dict[str, float], images: int, seconds: float) -> dict[str, Any]:
    """The training half of an epoch's history entry (`Run.evaluate` adds the rest)."""
    return {
        "epoch": epoch + 1,
        "lr": lr,
        **totals,
        "images": images,
        "threads": torch.get_num_threads(),
        "train_images_per_second": images / seconds,
        "train_seconds": seconds,
    }


def validate(model: nn.Module, split: Split, device: torch.device, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on `split` (no augmentation, no smoothing), in the number
    format of the caller's `devices.autocast`, if any."""
    return loss_and_accuracy(model, split, device, batch_size)


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, split: Split, device: torch.device, batch_size: int = 1000):
    """What `validate` measures, for any split (`diagnostics` scores training images with it)."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for images, labels in batches(split, batch_size, device=device):
        logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
    return loss_sum.item() / len(split), correct.item() / len(split)


def start_from(
    model: nn.Module, config: TrainConfig, provenance: dict[str, Any], probe: torch.Tensor | None
) -> dict[str, Any]:
    """A warm start: load the weights of the checkpoint `config.init_from` into `model` and, with
    `config.revive` > 0, give its collapsed attention layers fresh query/key weights of that scale
    (`diagnostics.revive_collapsed`). The optimiser, schedule and history start afresh; a resumed run then
    loads its own last epoch over these weights. Returns what the run's record keeps of its start: the
    checkpoint (file name, content hash, how it was trained, its test accuracy), its query/key norms and
    CLS spreads (on `probe`) as loaded, and the layers revived.

    Raises:
        CheckpointError: the file is unreadable, holds another model, or was validated on another split
            (its validation images could then be among those it learned from, and would flatter it).
    """
    from .checkpoint import load_checkpoint, stored_architecture

    source = config.init_from
    payload = load_checkpoint(source)
    if (
        stored_architecture(payload, source) != architecture_of(model)
        or payload["model_config"] != config_of(model).to_dict()
    ):
        raise CheckpointError(
            f"--init-from {source} holds a {stored_architecture(payload, source)} {payload['model_config']}, "
            f"not this run's {architecture_of(model)} {config_of(model).to_dict()}; "
            "start from a checkpoint of the same model"
        )
    stored = payload.get("provenance", {})
    for key in ("split_seed", "val_size"):
        if key in stored and key in provenance and stored[key] != provenance[key]:
            raise CheckpointError(
                f"--init-from {source} was validated on another split "
                f"({key} {stored[key]}, this run {provenance[key]}): its validation images may be among those it "
                "learned from; use the same --seed and --val-size"
            )
    model.load_state_dict(payload["model"])
    start = {
        "checkpoint": os.path.basename(source),
        "content_sha256": payload.get("content_sha256", ""),
        "hardware": payload.get("hardware", ""),
        "note": payload.get("note", ""),
        "epochs_run": payload.get("epochs_run", 0),
        "test_accuracy": (payload.get("test_metrics") or {}).get("accuracy"),
        **measure(model, probe=probe, clean=None, device=torch.device("cpu")),
    }
    generator = torch.Generator().manual_seed(config.seed)
    start["revived"] = revive_collapsed(model, generator, config.revive) if config.revive else []
    start["revive_scale"] = config.revive
    if config.revive:
        print(
            f"started from {source}; revived layers: {', '.join(map(str, start['revived'])) or 'none had collapsed'}",
            flush=True,
        )
    return start


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class Run:
    """One training run's state: the model, its optimiser, schedule, EMA and teacher, the `RunRecord`, the best
    weights so far and the epochs without improvement. `fit` drives one; `stacked.fit_stacked` several."""

    def __init__(
        self,
        model: nn.Module,
        data: CIFAR10,
        config: TrainConfig,
        *,
        device: torch.device,
        precision: str,
        capturable: bool = False,
    ) -> None:
        self.model, self.data, self.config, self.device, self.precision = model, data, config, device, precision
        self.probe = probe_images(config_of(model), data.val)
        started_from = start_from(model, config, data.provenance, self.probe) if config.init_from else None
        model.to(device)
        self.train = data.train.to(device) if device.type != "cpu" else data.train
        self.pipeline = Pipeline.from_config(config, len(CLASSES))
        self.optimizer = make_optimizer(model, config, capturable=capturable)
        self.steps_per_epoch = max(len(self.train) // config.batch_size, 1)
        # the last partial batch is dropped, unless it is the only one
        self.images_per_epoch = min(len(self.train), self.steps_per_epoch * config.batch_size)
        self.scheduler = make_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.ema = EMA(model, config.ema) if config.ema > 0 else None
        self.teacher = load_teacher(config.teacher, device) if config.teacher else None
        self.record = RunRecord(
            architecture=architecture_of(model),
            model_config=config_of(model),
            train_config=config,
            provenance=data.provenance,
            hardware=describe_hardware(device),
            precision=precision,
            started_from=started_from,
        )
        self.best_weights = _cpu_copy(self.evaluated)
        self.bad_epochs = 0
        self.warned: set[int] = set()  # layers already reported uniform
        self.clean = data.train.subset(CLEAN_TRAIN_IMAGES, seed=1)

    @property
    def evaluated(self) -> nn.Module:
        """What validation sees and what is kept as best: the weight average with EMA, else the model."""
        return self.ema.model if self.ema is not None else self.model

    @property
    def patience_ran_out(self) -> bool:
        return 0 < self.config.patience <= self.bad_epochs

    def set_learning_rates(self) -> None:
        """After loading: the schedule follows `config.lr` (which a resume may change), and each group's rate is a
        float, or a device tensor where the optimiser is fused or capturable for a CUDA graph."""
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.scheduler.base_lrs = [self.config.lr for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["initial_lr"] = self.config.lr
            value = self.config.lr * factor
            if group.get("fused") or group.get("capturable"):
                group["lr"] = torch.tensor(value, device=group["params"][0].device)
            else:
                group["lr"] = value

    def step(self, forward: nn.Module | None = None) -> TrainStep:
        return TrainStep(
            self.model,
            forward,
            self.optimizer,
            self.config,
            self.device,
            self.ema,
            precision=self.precision,
            teacher=self.teacher,
        )

    def begin_epoch(self, epoch: int) -> float:
        """Seed dropout and stochastic depth for `epoch` (0-based); the learning rate the epoch starts at."""
        torch.manual_seed(self.config.seed * 100_003 + epoch)
        self.model.train()
        return float(self.optimizer.param_groups[0]["lr"])

    def evaluate(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Validate and measure after an epoch's training; `entry` holds its training figures and is
        returned complete."""
        started = time.perf_counter()
        with autocast(self.device, self.precision):
            val_loss, val_accuracy = validate(self.evaluated, self.data.val, self.device)
        diagnostics = measure(
            self.evaluated, probe=self.probe, clean=self.clean, device=self.device, precision=self.precision
        )
        seconds = entry.pop("train_seconds") + time.perf_counter() - started
        entry.update(val_loss=val_loss, val_accuracy=val_accuracy, seconds=seconds, **diagnostics)
        entry["images_per_second"] = entry.pop("images") / seconds
        return entry

    def keep(self, entry: dict[str, Any]) -> None:
        """Add a finished epoch's entry to the history; keep its weights if it is the best so far."""
        record = self.record
        record.history.append(entry)
        record.wall_seconds += entry["seconds"]
        record.epochs_run = entry["epoch"]
        if entry["val_accuracy"] > record.best_val_accuracy:
            record.best_val_accuracy, record.best_epoch, self.bad_epochs = entry["val_accuracy"], entry["epoch"], 0
            self.best_weights = _cpu_copy(self.evaluated)
        else:
            self.bad_epochs += 1

    def last_state(self) -> dict[str, Any]:
        """What `last.pt` holds: the record, the live and best weights, and what resuming needs."""
        state = {
            **self.record.to_dict(),
            "model": self.model.state_dict(),
            "best_model": self.best_weights,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "bad_epochs": self.bad_epochs,
        }
        if self.ema is not None:
            state["ema"] = self.ema.model.state_dict()
        return state

    def best_state(self) -> dict[str, Any]:
        """What `best.pt` holds: the record and the best weights."""
        return {**self.record.to_dict(), "model": self.best_weights}

    def restore(self, payload: dict[str, Any], changes: dict[str, list]) -> None:
        """Continue from a `last.pt` payload (already checked to fit this run); `changes` records what a resume
        may change (e.g. a lower lr), from which epoch on.

        Raises:
            KeyError, ValueError or RuntimeError: the weights or optimiser state do not fit.
        """
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if self.ema is not None:
            self.ema.model.load_state_dict(payload["ema"])
        stored = RunRecord.from_dict(payload)
        self.record.history = stored.history
        self.record.best_epoch, self.record.best_val_accuracy = stored.best_epoch, stored.best_val_accuracy
        self.record.epochs_run, self.record.wall_seconds = stored.epochs_run, stored.wall_seconds
        self.record.config_changes = stored.config_changes
        self.record.branched_from = stored.branched_from
        if stored.hardware and stored.hardware != self.record.hardware:  # resumed on another machine
            changes = {**changes, "hardware": [stored.hardware, self.record.hardware]}
        if changes:
            self.record.config_changes.append({"from_epoch": stored.epochs_run + 1, **changes})
        self.best_weights = payload.get("best_model", _cpu_copy(self.evaluated))
        self.bad_epochs = payload.get("bad_epochs", 0)

    def restart_selection(self) -> None:
        """Choose the best epoch afresh from here on (a cooldown's best is one of its own epochs)."""
        self.record.best_epoch, self.record.best_val_accuracy, self.bad_epochs = 0, -1.0, 0
        self.best_weights = _cpu_copy(self.evaluated)

    def warn_if_uniform(self, entry: dict[str, Any]) -> None:
        """A warning when a layer's CLS attention has gone uniform during the run (`diagnostics.gone_uniform`),
        once per layer."""
        tokens = getattr(config_of(self.model), "num_tokens", 0)
        if not tokens:  # a model without attention
            return
        layers = [layer for layer in gone_uniform(self.record.history, tokens) if layer not in self.warned]
        self.warned.update(layers)
        if layers:
            norms = entry.get("qk_norms", [])
            shown = ", ".join(f"{layer} (q/k norm {norms[layer - 1][0]:.2f})" for layer in layers) if norms else ""
            warnings.warn(
                f"epoch {entry['epoch']}: the CLS attention of layer(s) {shown or layers} has gone uniform "
                "(every patch weighted alike); weight decay may be winning over their gradient: "
                "try TrainConfig(qk_decay=0) (chapter 6)",
                stacklevel=3,
            )


@dataclass
class FitResult:
    """What `fit` returns: the model with its best weights, and the run's record."""

    model: nn.Module
    record: RunRecord
    checkpoint: Path | None = None  # best.pt, when the run had a folder

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.record.history

    @property
    def best_epoch(self) -> int:
        return self.record.best_epoch

    @property
    def stopped_early(self) -> bool:
        return self.record.stopped_early


def compile_for(model: nn.Module, device: torch.device) -> nn.Module:
    """`torch.compile` on CUDA (the step is then captured whole in a CUDA graph, see `graphs`); elsewhere the
    eager model, with a note why. The returned module shares its parameters with `model`."""
    if device.type != "cuda":
        warnings.warn(f"compile is used on CUDA only; training eagerly on {device.type}", stacklevel=3)
        return model
    return typing.cast(nn.Module, torch.compile(model))


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
    precision: str = "auto",
    snapshot_every: int = 0,
) -> FitResult:
    """Train `model` on `data.train`, early-stop on `data.val`, and return it holding its best weights.

    `progress` shows tqdm bars; `log_epochs` prints one summary line per epoch. With `out_dir`, the run folder
    (`runs.RunFolder`) is locked for the run's life and `last.pt` is rewritten after every epoch;
    `resume=True` continues from it (a changed `lr` or `grad_clip` is allowed and recorded; anything else
    must match). A folder that already holds a run is refused unless `overwrite=True`, which first removes
    that run's files. `compile=True` trains through `torch.compile` on CUDA, with the whole step captured
    in a CUDA graph and the next epoch's batches prepared while the current one trains; elsewhere it
    trains eagerly. `precision` "auto" is bfloat16 autocast where the device multiplies it natively
    (`devices.native_bf16`), else float32. Shuffling, augmentation and dropout are seeded per epoch, so
    a resumed run repeats the uninterrupted one exactly. With `config.ema`, validation, early stopping
    and the saved best weights use the averaged weights. With `snapshot_every` N and `out_dir`, every Nth
    epoch's `last.pt` is also kept as `snapshots/epoch_NNNN.pt`, a point a cooldown can branch from later.
    With `config.branch_from`, the run is a cooldown that continues that checkpoint (`runs.branch`); its
    best epoch is chosen among its own epochs.

    Raises:
        TrainingDivergedError: the loss or the weights became NaN or infinite; nothing non-finite is saved.
        CheckpointError: `resume` was asked for but `last.pt` is missing, corrupt or from another setup,
            or `out_dir` holds a run and neither `resume` nor `overwrite` was given.
        RunInUseError: another process is writing to `out_dir`.
    """
    from .runs import RunFolder, branch, check_finite

    device = select_device(device)
    graph = compile and device.type == "cuda"
    run = Run(model, data, config, device=device, precision=resolve_precision(precision, device), capturable=graph)
    folder = RunFolder(out_dir) if out_dir is not None else None
    with folder.writing(resume=resume, overwrite=overwrite) if folder else contextlib.nullcontext():
        if resume:
            if folder is None:
                raise ValueError("resume=True needs out_dir, the folder holding last.pt")
            folder.resume(run)
        elif config.branch_from:
            branch(run)
        run.set_learning_rates()
        step: Any = run.step(compile_for(model, device) if compile else None)
        prefetcher = None
        if graph:
            from .graphs import GraphedStep, Prefetcher

            step = GraphedStep(step)
            prefetcher = Prefetcher(device, lambda epoch: epoch_batches(run, epoch), config.epochs)
        for epoch, entry in epochs(run, step, progress=progress, prefetcher=prefetcher):
            entry = run.evaluate(entry)
            check_finite(entry, model, epoch, folder)
            run.keep(entry)
            if log_epochs:
                _log(entry)
            run.warn_if_uniform(entry)
            if folder is not None:
                folder.save_last(run)
                if snapshot_every and entry["epoch"] % snapshot_every == 0:
                    folder.save_snapshot(run)
        model.load_state_dict(run.best_weights)
        checkpoint = folder.save_best(run) if folder is not None else None
    return FitResult(model, run.record, checkpoint)


def epochs(run: Run, step, *, progress: bool, prefetcher=None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Train `run` from its next epoch on, yielding (epoch, the epoch's training figures) after each; stop
    early, setting `run.record.stopped_early`, when the patience has run out before an epoch. With a
    `graphs.Prefetcher`, each epoch's batches are prepared while the previous epoch's steps run."""
    for epoch in range(run.record.epochs_run, run.config.epochs):
        if run.patience_ran_out:
            run.record.stopped_early = True
            return
        if prefetcher is None:
            yield epoch, run_epoch(run, step, epoch, epoch_batches(run, epoch), progress)
        else:
            prepared, upcoming = prefetcher.take(epoch), lambda e=epoch: prefetcher.prepare(e + 1)
            yield epoch, run_epoch(run, step, epoch, prepared, progress, meanwhile=upcoming)


def _log(entry: dict[str, Any]) -> None:
    from tqdm.auto import tqdm

    clean = f"  clean train acc {entry['train_clean_accuracy']:.3f}" if "train_clean_accuracy" in entry else ""
    tqdm.write(
        f"epoch {entry['epoch']:3d}  train loss {entry['train_loss']:.3f} acc {entry['train_accuracy']:.3f}  "
        f"val loss {entry['val_loss']:.3f} acc {entry['val_accuracy']:.3f}{clean}  {entry['seconds']:.1f}s"
    )


def run_epoch(run: Run, step, epoch: int, prepared: Iterable, progress: bool, meanwhile=None) -> dict[str, Any]:
    """Train `run` for one epoch through `step` on `prepared` batches: the epoch's training figures (the
    validation is added by `Run.evaluate`)."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    lr = run.begin_epoch(epoch)
    images = run.images_per_epoch
    bar = (
        tqdm(total=images, desc=f"epoch {epoch + 1}/{run.config.epochs}", unit="img", leave=False) if progress else None
    )
    try:
        steps = train_epoch(step, prepared, run.scheduler, bar, meanwhile, images // run.steps_per_epoch)
    finally:
        if bar is not None:
            bar.close()
    totals = step.totals(images, steps)
    return training_entry(epoch, lr, totals, images, time.perf_counter() - started)
