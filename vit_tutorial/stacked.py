"""Several recipes of one model trained side by side as one stacked model: a whole grid on one GPU.

The card's model is too small to keep a large GPU busy: one run's step is a few hundred small matrix
products. Recipes that share the model's shape and the batch size can run as one: their weights are
stacked along a new leading axis, and `torch.func.vmap` runs the forward and backward passes of all of
them at once, so every product becomes one batched product R times the size. Everything that differs
between recipes stays per recipe, exactly as when it trains alone (`train.Run`): its data pipeline and
seeds, loss (label smoothing, distillation), gradient clipping, optimiser, weight decay, learning-rate
schedule, EMA, validation, early stopping and run folder. Only the order in which the floating-point
products are summed differs, so a recipe trains as it would alone up to rounding (tested on the CPU).

On CUDA with `compile=True` the stacked step is captured as one CUDA graph (`graphs.GraphedStep`) and the
next epoch's batches of every recipe are prepared on a side stream while the current epoch runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import TrainConfig
from .data import CIFAR10
from .devices import autocast, resolve_precision, select_device
from .train import FitResult, Run, TrainStep, epoch_batches, train_epoch, training_entry


def stackable(configs: Sequence[tuple[Any, TrainConfig]]) -> bool:
    """True when recipes (model config, train config) can train as one stacked model: the same model (the
    book's ViT: a ResNet's batch norm keeps running statistics, which do not stack), the same batch size and
    the same number of epochs, so that their steps line up."""
    from .config import ViTConfig

    first_model, first_train = configs[0]
    return all(
        isinstance(model, ViTConfig)
        and model == first_model
        and train.batch_size == first_train.batch_size
        and train.epochs == first_train.epochs
        for model, train in configs
    )


class StackedStep:
    """One training step for R runs at once: one vmapped forward and backward pass over their stacked weights,
    then each run's own loss bookkeeping, clipping, optimiser and EMA (`TrainStep.update`).

    Called with the stacked images (R, B, 3, H, W), the stacked labels (R, B) and each run's targets (class
    indices or soft labels, which may differ between runs)."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self.runs = list(runs)
        self.steps: list[TrainStep] = [run.step() for run in self.runs]
        first = self.runs[0]
        self.device, self.precision = first.device, first.precision
        self.template = type(first.model)(first.model.config).to("meta")  # the structure, without weights
        self.names = [name for name, _ in first.model.named_parameters()]

    def _forward(self, params: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, params, (images,))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, *targets: torch.Tensor) -> None:
        params = {name: torch.stack([run.model.get_parameter(name) for run in self.runs]) for name in self.names}
        # The math kernel of scaled_dot_product_attention is plain products, which vmap batches; at 17
        # tokens it is as fast as the fused kernels, which have no batching rule on every device.
        with autocast(self.device, self.precision), sdpa_kernel(SDPBackend.MATH):
            logits = vmap(self._forward, randomness="different")(params, images)  # (r, b, classes)
        losses = [step.loss(logits[r], targets[r], images[r]) for r, step in enumerate(self.steps)]
        self.zero_grad()
        torch.stack(losses).sum().backward()  # the runs share no weight: each gets its own loss's gradient
        for r, step in enumerate(self.steps):
            step.update(losses[r], logits[r], labels[r])

    def reset(self) -> None:
        for step in self.steps:
            step.reset()

    def zero_grad(self) -> None:
        for step in self.steps:
            step.zero_grad()

    def totals(self, images: int, steps: int) -> list[dict[str, float]]:
        return [step.totals(images, steps) for step in self.steps]


class _Scheduler:
    """Steps every run's learning-rate schedule at once, so `train.train_epoch` can drive a stack."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self.runs = runs

    def step(self) -> None:
        for run in self.runs:
            run.scheduler.step()


def _stacked_batches(runs: Sequence[Run], epoch: int):
    """Each run's own batches of `epoch` (as it would see them alone), stacked step by step."""
    for parts in zip(*(epoch_batches(run, epoch) for run in runs)):
        images = torch.stack([images for images, _, _ in parts])
        labels = torch.stack([labels for _, _, labels in parts])
        yield (images, labels, *(targets for _, targets, _ in parts))


def fit_stacked(
    models: Sequence[nn.Module],
    data: CIFAR10,
    configs: Sequence[TrainConfig],
    out_dirs: Sequence[str | Path],
    *,
    device: str | torch.device | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log=print,
    compile: bool = False,
    precision: str = "auto",
) -> list[FitResult]:
    """Train each model with its config into its run folder, all at once as one stacked model; as `train.fit`
    does for one (locks, resume, checkpoints every epoch, early stopping, best weights), with the same
    results up to rounding. A run whose patience runs out leaves the stack; the others go on.

    Raises:
        ValueError: the recipes cannot be stacked (see `stackable`).
    """
    from .runs import RunFolder, branch, check_finite

    if not stackable([(model.config, config) for model, config in zip(models, configs)]):
        raise ValueError("stacked recipes need the same ViT configuration, batch size and number of epochs")
    device = select_device(device)
    graph = compile and device.type == "cuda"
    precision = resolve_precision(precision, device)
    runs = [Run(m, data, c, device=device, precision=precision, capturable=graph) for m, c in zip(models, configs)]
    folders = [RunFolder(path) for path in out_dirs]
    with contextlib.ExitStack() as held:
        for run, folder in zip(runs, folders):
            held.enter_context(folder.writing(resume=resume and folder.last.is_file(), overwrite=overwrite))
            if resume and folder.last.is_file():
                folder.resume(run)
            elif run.config.branch_from:
                branch(run)
            run.set_learning_rates()
        results: dict[int, FitResult] = {}
        while len(results) < len(runs):
            _train_stack(runs, folders, results, progress=progress, graph=graph, log=log, check=check_finite)
    return [results[i] for i in range(len(runs))]


def _train_stack(runs, folders, results, *, progress, graph, log, check) -> None:
    """Train the unfinished runs at the earliest epoch together until one of them stops early or they all
    finish, then return; the caller calls again with the runs that are left. Runs resumed from different
    epochs so catch up one group at a time, and a stopped run leaves the stack."""
    pending = [i for i in range(len(runs)) if i not in results]
    start = min(runs[i].record.epochs_run for i in pending)
    group = [i for i in pending if runs[i].record.epochs_run == start]
    members = [runs[i] for i in group]
    stepper, prefetcher = StackedStep(members), None
    if graph:
        from .graphs import GraphedStep, Prefetcher

        stepper = GraphedStep(stepper)  # type: ignore[assignment]
        prefetcher = Prefetcher(members[0].device, lambda e: _stacked_batches(members, e), members[0].config.epochs)
    behind = len(group) < len(pending)  # others wait at a later epoch: stop when this group reaches them
    for epoch in range(start, members[0].config.epochs):
        if behind and any(runs[i].record.epochs_run == epoch for i in pending if i not in group):
            return
        stopped = [i for i, run in zip(group, members) if run.patience_ran_out]
        if stopped:
            for i in stopped:
                runs[i].record.stopped_early = True
                results[i] = _finish(runs[i], folders[i])
            return
        for run, entry in zip(members, _stacked_epoch(members, stepper, epoch, progress, prefetcher)):
            i = group[members.index(run)]
            entry = run.evaluate(entry)
            check(entry, run.model, epoch, folders[i])
            run.keep(entry)
            run.warn_if_uniform(entry)
            folders[i].save_last(run)
        scores = "  ".join(
            f"{folders[i].path.name} val {runs[i].record.history[-1]['val_accuracy']:.3f}" for i in group
        )
        log(f"epoch {epoch + 1:3d}  {scores}")
    for i in group:
        results[i] = _finish(runs[i], folders[i])


def _stacked_epoch(
    members: Sequence[Run], stepper, epoch: int, progress: bool, prefetcher=None
) -> list[dict[str, Any]]:
    """One epoch of the stack: each run's training figures, as `train.run_epoch` gives them for one run."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    lrs = [run.begin_epoch(epoch) for run in members]
    first = members[0]
    images = first.images_per_epoch
    bar = (
        tqdm(total=images, desc=f"epoch {epoch + 1}/{first.config.epochs}", unit="img", leave=False)
        if progress
        else None
    )
    try:
        if prefetcher is None:
            prepared, upcoming = _stacked_batches(members, epoch), None
        else:
            prepared, upcoming = prefetcher.take(epoch), lambda e=epoch: prefetcher.prepare(e + 1)
        steps = train_epoch(stepper, prepared, _Scheduler(members), bar, upcoming, images // first.steps_per_epoch)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    return [
        training_entry(epoch, lr, totals, images, seconds) for lr, totals in zip(lrs, stepper.totals(images, steps))
    ]


def _finish(run: Run, folder) -> FitResult:
    run.model.load_state_dict(run.best_weights)
    return FitResult(run.model, run.record, folder.save_best(run))
