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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import RunOptions, TrainConfig, ViTConfig
from .data import CIFAR10
from .devices import autocast, device_for
from .run_folder import RunFolder
from .run_state import FitResult, Run
from .train import Stepping, TrainStep, alone, epoch_batches, train_runs


def stackable(configs: Sequence[tuple[Any, TrainConfig]]) -> bool:
    """True when recipes (model config, train config) can train as one stacked model: the same model (the
    book's ViT: a ResNet's batch norm keeps running statistics, which do not stack), the same batch size and
    the same number of epochs, so that their steps line up."""
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
        self.steps: list[TrainStep] = [TrainStep.of(run) for run in self.runs]
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


def stacked_batches(runs: Sequence[Run], epoch: int):
    """Each run's own batches of `epoch` (as it would see them alone), stacked step by step."""
    for parts in zip(*(epoch_batches(run, epoch) for run in runs)):
        images = torch.stack([images for images, _, _ in parts])
        labels = torch.stack([labels for _, _, labels in parts])
        yield (images, labels, *(targets for _, targets, _ in parts))


def stacked(group: Sequence[Run]) -> Stepping:
    """How a group of runs trains as one stacked model (`train.train_runs`): a `StackedStep` on their stacked
    batches; a group of one takes its own step, as it would alone."""
    if len(group) == 1:
        return alone(group)
    return Stepping(StackedStep(group), lambda epoch: stacked_batches(group, epoch))


def fit_stacked(
    models: Sequence[nn.Module],
    data: CIFAR10,
    configs: Sequence[TrainConfig],
    out_dirs: Sequence[str | Path],
    options: RunOptions | None = None,
    on_epoch=None,
) -> list[FitResult]:
    """Train each model with its config into its run folder, all at once as one stacked model; as `train.fit`
    does for one (locks, resume, checkpoints every epoch, early stopping, best weights), with the same
    results up to rounding. With `options.resume`, a folder that holds a `last.pt` resumes and the others
    start. A run whose patience runs out leaves the stack; the others go on.

    Raises:
        ValueError: the recipes cannot be stacked (see `stackable`).
    """
    options = options or RunOptions()
    if not stackable([(model.config, config) for model, config in zip(models, configs)]):
        raise ValueError("stacked recipes need the same ViT configuration, batch size and number of epochs")
    device, precision = device_for(options)
    runs = [
        Run(m, data, c, device=device, precision=precision, compile=options.compile) for m, c in zip(models, configs)
    ]
    folders = [RunFolder(path) for path in out_dirs]
    with contextlib.ExitStack() as held:
        for run, folder in zip(runs, folders):
            resume = options.resume and folder.last.is_file()
            held.enter_context(folder.writing(resume=resume, overwrite=options.overwrite))
            run.start(folder, resume)
        return train_runs(runs, folders, options, stepping=stacked, on_epoch=on_epoch)
