"""One training run's state, `Run`: the model and everything its training changes or keeps (optimiser,
schedule, EMA, teacher, record, best weights, patience), how it starts (afresh, resumed or branched), what it
measures after an epoch and keeps of it, and what its checkpoints hold. `train` drives runs; this module
does not train."""

from __future__ import annotations

import time
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .augment import Pipeline
from .config import TrainConfig
from .data import CIFAR10, CLASSES
from .devices import autocast, describe_hardware
from .diagnostics import Diagnostics, gone_uniform
from .distill import load_teacher
from .evaluate import loss_and_accuracy
from .optim import EMA, Decay, make_optimizer, make_scheduler
from .parameters import decay_for
from .record import EpochEntry, RunRecord
from .registry import architecture_of, config_of
from .run_folder import RunFolder, check_finite
from .warmstart import branch, start_from

# A prime larger than any number of epochs, so that no two (seed, epoch) pairs share a generator seed.
EPOCH_SEED_STRIDE = 100_003


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random in `epoch` (0-based) of a run seeded `seed`: shuffling, augmentation, dropout.
    Each epoch is seeded by its number alone, so a resumed run repeats the uninterrupted one exactly."""
    return seed * EPOCH_SEED_STRIDE + epoch


class Schedules:
    """Steps the learning-rate schedule of every run of a group at once, after each of their common steps."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self.runs = runs

    def step(self) -> None:
        for run in self.runs:
            run.scheduler.step()


def compile_for(model: nn.Module, device: torch.device) -> nn.Module:
    """`torch.compile` on CUDA (the step is then captured whole in a CUDA graph, see `graphs`); elsewhere the
    eager model, with a note why. The returned module shares its parameters with `model`."""
    if device.type != "cuda":
        warnings.warn(f"compile is used on CUDA only; training eagerly on {device.type}", stacklevel=3)
        return model
    return typing.cast(nn.Module, torch.compile(model))


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class Run:
    """One training run's state: the model, its optimiser, schedule, EMA and teacher, the `RunRecord`, the best
    weights so far and the epochs without improvement. `decay` says which weights decay (default
    `parameters.decay_for`), `diagnostics` what each epoch measures (default `Diagnostics.for_run`)."""

    def __init__(
        self,
        model: nn.Module,
        data: CIFAR10,
        config: TrainConfig,
        *,
        device: torch.device,
        precision: str,
        compile: bool = False,
        decay: Callable[[nn.Module, TrainConfig], Decay] = decay_for,
        diagnostics: Diagnostics | None = None,
    ) -> None:
        for part, split in (("training", data.train), ("validation", data.val)):
            if not len(split):
                raise ValueError(f"the data hold no {part} images; a run needs both (for validation: val_size > 0)")
        self.model, self.data, self.config, self.device, self.precision = model, data, config, device, precision
        self.diagnostics = diagnostics or Diagnostics.for_run(config_of(model), data)
        started_from = (
            start_from(model, config, data.provenance, self.diagnostics.of_weights) if config.init_from else None
        )
        model.to(device)
        self.graph = compile and device.type == "cuda"  # the step replayed as one CUDA graph
        self.prefetch = self.graph  # each epoch's batches prepared while the one before trains
        self.forward = compile_for(model, device) if compile else None
        self.train = data.train.to(device) if device.type != "cpu" else data.train
        self.pipeline = Pipeline.from_config(config, len(CLASSES))
        self.optimizer = make_optimizer(model, config, decay(model, config), capturable=self.graph)
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

    @property
    def evaluated(self) -> nn.Module:
        """What validation sees and what is kept as best: the weight average with EMA, else the model."""
        return self.ema.model if self.ema is not None else self.model

    @property
    def patience_ran_out(self) -> bool:
        return 0 < self.config.patience <= self.bad_epochs

    def start(self, folder: RunFolder | None, resume: bool) -> None:
        """Continue from the folder's `last.pt` (`resume`), or a cooldown from its branch point, or start afresh."""
        if resume:
            if folder is None:
                raise ValueError("resume needs a run folder (out_dir), the folder holding last.pt")
            folder.resume(self)
        elif self.config.branch_from:
            branch(self)
        self.set_learning_rates()

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

    def begin_epoch(self, epoch: int) -> float:
        """Seed dropout and stochastic depth for `epoch` (0-based); the learning rate the epoch starts at."""
        torch.manual_seed(epoch_seed(self.config.seed, epoch))
        self.model.train()
        return float(self.optimizer.param_groups[0]["lr"])

    def measure_epoch(self, epoch: int, lr: float, totals: dict[str, float], train_seconds: float) -> EpochEntry:
        """Validate and measure after an epoch's training (`totals`: its loss, accuracy and clipped share)."""
        started = time.perf_counter()
        with autocast(self.device, self.precision):
            val_loss, val_accuracy = loss_and_accuracy(self.evaluated, self.data.val, self.device)
        found = self.diagnostics(self.evaluated, self.device, self.precision)
        seconds = train_seconds + time.perf_counter() - started
        return EpochEntry(
            epoch=epoch + 1,
            lr=lr,
            train_loss=totals["train_loss"],
            train_accuracy=totals["train_accuracy"],
            clipped=totals["clipped"],
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            seconds=seconds,
            images_per_second=self.images_per_epoch / seconds,
            train_images_per_second=self.images_per_epoch / train_seconds,
            threads=torch.get_num_threads(),
            **found,
        )

    def end_epoch(self, entry: EpochEntry, folder: RunFolder | None, snapshot_every: int = 0) -> None:
        """After an epoch: refuse anything non-finite, keep the entry (and the weights if best), save `last.pt`
        (and every `snapshot_every`th epoch a snapshot), warn of a layer gone uniform."""
        check_finite(entry, self.model, folder)
        self.keep(entry)
        if folder is not None:
            folder.save_last(self)
            if snapshot_every and entry.epoch % snapshot_every == 0:
                folder.save_snapshot(self)
        self.warn_if_uniform(entry)

    def keep(self, entry: EpochEntry) -> None:
        """Add a finished epoch's entry to the history; keep its weights if it is the best so far."""
        record = self.record
        record.history.append(entry)
        record.wall_seconds += entry.seconds
        record.epochs_run = entry.epoch
        if entry.val_accuracy > record.best_val_accuracy:
            record.best_val_accuracy, record.best_epoch, self.bad_epochs = entry.val_accuracy, entry.epoch, 0
            self.best_weights = _cpu_copy(self.evaluated)
        else:
            self.bad_epochs += 1

    def finish(self, folder: RunFolder | None) -> FitResult:
        """The run's end: the model holds its best weights, written to `best.pt` when there is a folder."""
        self.model.load_state_dict(self.best_weights)
        return FitResult(self.model, self.record, folder.save_best(self) if folder is not None else None)

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
        _check_training_state(payload, self.optimizer)
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

    def warn_if_uniform(self, entry: EpochEntry) -> None:
        """A warning when a layer's CLS attention has gone uniform during the run (`diagnostics.gone_uniform`),
        once per layer."""
        tokens = getattr(self.record.model_config, "num_tokens", 0)
        if not tokens:  # a model without attention
            return
        layers = [layer for layer in gone_uniform(self.record.history, tokens) if layer not in self.warned]
        self.warned.update(layers)
        if layers:
            norms = entry.qk_norms or []
            shown = ", ".join(f"{layer} (q/k norm {norms[layer - 1][0]:.2f})" for layer in layers) if norms else ""
            warnings.warn(
                f"epoch {entry.epoch}: the CLS attention of layer(s) {shown or layers} has gone uniform "
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
    def history(self) -> list[EpochEntry]:
        return self.record.history

    @property
    def best_epoch(self) -> int:
        return self.record.best_epoch

    @property
    def stopped_early(self) -> bool:
        return self.record.stopped_early


def _check_training_state(payload: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """What resuming loads besides the weights, checked before anything is loaded: the schedule's step is a count,
    and every saved optimiser buffer (momentum, Adam's moments) has the shape of its parameter.

    Raises:
        ValueError: state that does not fit.
    """
    step = payload["scheduler"].get("last_epoch")
    if not isinstance(step, int) or isinstance(step, bool) or step < -1:
        raise ValueError(f"the schedule's step is {step!r}, not a count of steps")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stored = payload["optimizer"].get("state", {})
    if not isinstance(stored, dict):
        raise ValueError("the optimiser state is not a table of buffers")
    for index, buffers in stored.items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(buffers, dict):
            raise ValueError(f"the optimiser state names parameter {index!r}, which this run does not have")
        for name, value in buffers.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != params[index].shape:
                raise ValueError(
                    f"the optimiser's {name} of parameter {index} is {tuple(value.shape)}, its parameter "
                    f"{tuple(params[index].shape)}"
                )
