"""The trainer: one optimiser step (`TrainStep`), one epoch (`run_epoch`), and `fit`, which trains a model on
`data.train`, selects on `data.val` (never on the test set), keeps the best weights and, given a run folder,
checkpoints every epoch.

It knows nothing of the model it trains: which weights decay comes in as `decay` (by default the book's rules,
`parameters.decay_for`), what each epoch measures beyond loss and accuracy as `diagnostics` (by default
`diagnostics.Diagnostics.for_run`). `Run` holds one run's state. `train_runs` drives one run, or several as one
stacked model (`stacked.fit_stacked`), through the same epoch routine and the same bookkeeping after each
epoch (`Run.end_epoch`). On CUDA with `RunOptions.compile`, `graphs.GraphedStep` replays the step as one CUDA
graph while the next epoch's batches are prepared.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .config import RunOptions, TrainConfig
from .data import CIFAR10, batches
from .devices import autocast, device_for
from .diagnostics import Diagnostics
from .distill import distillation_loss
from .graphs import GraphedStep, Prefetcher
from .optim import EMA, Decay
from .parameters import decay_for
from .record import EpochEntry
from .run_folder import RunFolder
from .run_state import FitResult, Run, Schedules, epoch_seed

__all__ = ["TrainStep", "fit", "run_epoch", "train_runs"]


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
        self.ranks: distributed.Ranks | None = None  # a share of a run on several processes

    @classmethod
    def of(cls, run: Run) -> TrainStep:
        """The step of `run`: its model (compiled where asked), optimiser, EMA and teacher."""
        forward = run.forward
        return cls(
            run.model,
            forward,
            run.optimizer,
            run.config,
            run.device,
            run.ema,
            precision=run.precision,
            teacher=run.teacher,
        )

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
        self.optimizer.step()  # a RowDecay, if any, runs first
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
        """Mean loss, accuracy and clipped share since `reset`, over `images` images in `steps` steps (on several
        ranks, `images` of all of them: their sums are added first)."""
        if self.ranks is not None:
            distributed.add_over_ranks([self.loss_sum, self.correct])
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
    generator = torch.Generator(device=split.labels.device).manual_seed(epoch_seed(config.seed, epoch))
    drop_last = len(split) >= config.batch_size
    for images, labels in batches(
        split, config.batch_size, shuffle=True, generator=generator, drop_last=drop_last, raw=True
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


def fit(
    model: nn.Module,
    data: CIFAR10,
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    options: RunOptions | None = None,
    decay: Callable[[nn.Module, TrainConfig], Decay] = decay_for,
    diagnostics: Diagnostics | None = None,
    on_epoch: Callable[[Run, EpochEntry], None] | None = None,
) -> FitResult:
    """Train `model` on `data.train`, early-stop on `data.val`, and return it holding its best weights.

    With `out_dir`, the run folder (`run_folder.RunFolder`) is locked for the run's life and `last.pt` is
    rewritten after every epoch; `options.resume` continues from it (a changed `lr` or `grad_clip` is allowed
    and recorded, and a constant rate's `epochs`; anything else must match). A folder that already holds a
    run is refused unless `options.overwrite`, which first removes that run's files. Shuffling, augmentation
    and dropout are seeded per epoch (`run_state.epoch_seed`), so a resumed run repeats the uninterrupted one
    exactly. With `config.ema`, validation, early stopping and the saved best weights use the averaged
    weights; with `config.branch_from`, the run is a cooldown of that checkpoint (`warmstart.branch`).
    `on_epoch(run, entry)` is called after each epoch, once it is saved. Started by `torchrun` on several
    processes, it trains one run with DistributedDataParallel (`distributed`).

    Raises:
        TrainingDivergedError: the loss or the weights became NaN or infinite; nothing non-finite is saved.
        CheckpointError: `resume` was asked for but `last.pt` is missing, corrupt or from another setup,
            or `out_dir` holds a run and neither `resume` nor `overwrite` was given.
        RunInUseError: another process is writing to `out_dir`.
    """
    options = options or RunOptions()
    ranks = distributed.launched()
    if ranks is not None and not ranks.leader:  # rank 0 prints
        options = options.replace(progress=False, log=False)
    device, precision = device_for(options, ranks.local_rank if ranks else None)
    run = Run(
        model,
        data,
        config,
        device=device,
        precision=precision,
        compile=options.compile,
        decay=decay,
        diagnostics=diagnostics,
    )
    stepping = alone if ranks is None else sharded(run, ranks)
    folder = RunFolder(out_dir) if out_dir is not None else None
    writer = folder if ranks is None or ranks.leader else None  # rank 0 writes the folder; the others read it
    holding = writer.writing(resume=options.resume, overwrite=options.overwrite) if writer else contextlib.nullcontext()
    with holding:
        if ranks is not None:
            distributed.wait_for_all()  # rank 0 holds the folder before anyone reads it
        run.start(folder, options.resume)
        (result,) = train_runs([run], [writer], options, stepping=stepping, on_epoch=on_epoch)
    return result


def sharded(run: Run, ranks: distributed.Ranks) -> Callable[[Sequence[Run]], Stepping]:
    """How `run` trains as one of `ranks`: its model wrapped in DistributedDataParallel, each batch drawn whole
    and cut into the ranks' shares, the epoch's sums added over the ranks. (No CUDA graph: the step's
    collective communication stays outside one.)"""
    if run.config.batch_size % ranks.world:
        raise ValueError(
            f"batch_size {run.config.batch_size} does not split evenly over {ranks.world} processes; "
            f"give a multiple of {ranks.world}"
        )
    distributed.join(run.device)
    run.forward = distributed.wrap(run.forward or run.model, run.device)
    run.graph = False
    run.record.hardware += f", {ranks.world} processes (DistributedDataParallel)"

    def stepping(group: Sequence[Run]) -> Stepping:
        step = TrainStep.of(run)
        step.ranks = ranks
        return Stepping(step, lambda epoch: (distributed.shard(b, ranks) for b in epoch_batches(run, epoch)))

    return stepping


@dataclass
class Stepping:
    """How a group of runs trains together: `step` takes one batch of each, `batches(epoch)` gives an epoch's
    batches in the form `step` takes them."""

    step: Any
    batches: Callable[[int], Iterable]


def alone(group: Sequence[Run]) -> Stepping:
    """One run's own step (the default of `train_runs`): it trains a group of one."""
    (run,) = group
    return Stepping(TrainStep.of(run), lambda epoch: epoch_batches(run, epoch))


def train_runs(
    runs: Sequence[Run],
    folders: Sequence[RunFolder | None],
    options: RunOptions,
    *,
    stepping: Callable[[Sequence[Run]], Stepping] = alone,
    on_epoch: Callable[[Run, EpochEntry], None] | None = None,
) -> list[FitResult]:
    """Train `runs` (started: `Run.start`), each into its folder (or none), from their next epoch to their last or
    until their patience runs out, and return their results in order. The runs at the earliest epoch train
    together through `stepping(group)`; runs resumed at later epochs wait until the group reaches them, and a
    run whose patience ran out leaves the group."""
    results: dict[int, FitResult] = {}
    while len(results) < len(runs):
        _train_group(runs, folders, results, options, stepping, on_epoch)
    return [results[i] for i in range(len(runs))]


def _train_group(runs, folders, results, options: RunOptions, stepping, on_epoch) -> None:
    """Train the unfinished runs at the earliest epoch until one stops early, they reach another run, or finish."""
    pending = [i for i in range(len(runs)) if i not in results]
    start = min(runs[i].record.epochs_run for i in pending)
    group = [i for i in pending if runs[i].record.epochs_run == start]
    members = [runs[i] for i in group]
    plan = stepping(members)
    step = GraphedStep(plan.step) if members[0].graph else plan.step
    prefetcher = Prefetcher(members[0].device, plan.batches, members[0].config.epochs) if members[0].prefetch else None
    waiting = [i for i in pending if i not in group]
    for epoch in range(start, members[0].config.epochs):
        if any(runs[i].record.epochs_run == epoch for i in waiting):
            return
        stopped = [i for i in group if runs[i].patience_ran_out]
        for i in stopped:
            runs[i].record.stopped_early = True
            results[i] = runs[i].finish(folders[i])
        if stopped:
            return
        if prefetcher is None:
            entries = run_epoch(members, step, epoch, plan.batches(epoch), options.progress)
        else:
            upcoming = lambda e=epoch: prefetcher.prepare(e + 1)  # noqa: E731
            entries = run_epoch(members, step, epoch, prefetcher.take(epoch), options.progress, upcoming)
        for i, run, entry in zip(group, members, entries):
            run.end_epoch(entry, folders[i], options.snapshot_every)
            if options.log:
                _log(entry, folders[i].path.name if len(members) > 1 and folders[i] is not None else "")
            if on_epoch is not None:
                on_epoch(run, entry)
    for i in group:
        results[i] = runs[i].finish(folders[i])


def _log(entry: EpochEntry, name: str = "") -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"{name}: {entry.summary()}" if name else entry.summary())


def run_epoch(
    runs: Sequence[Run], step, epoch: int, prepared: Iterable, progress: bool, meanwhile=None
) -> list[EpochEntry]:
    """Train `runs` (one, or a stacked group) for one epoch through `step` on `prepared` batches, then validate
    and measure each: one entry per run."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    lrs = [run.begin_epoch(epoch) for run in runs]
    first = runs[0]
    images = first.images_per_epoch
    total = first.config.epochs
    bar = tqdm(total=images, desc=f"epoch {epoch + 1}/{total}", unit="img", leave=False) if progress else None
    try:
        steps = train_epoch(step, prepared, Schedules(runs), bar, meanwhile, images // first.steps_per_epoch)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    totals = step.totals(images, steps)
    totals = totals if isinstance(totals, list) else [totals]  # a stacked step sums per run
    return [run.measure_epoch(epoch, lr, t, seconds) for run, lr, t in zip(runs, lrs, totals)]
