"""The optimiser and its schedule: SGD (or AdamW) with weight decay where a `Decay` says, the learning rate of
every step, and a moving average of the weights.

Nothing here knows which model it trains: which weights decay, and by how much, comes in as a `Decay`
(`parameters.decay_for` makes the book's; `default_decay` decays every weight matrix and convolution kernel).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["EMA", "Decay", "RowDecay", "default_decay", "lr_factor", "make_optimizer", "make_scheduler"]


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


@dataclass
class Decay:
    """Which trainable parameters decay: `decayed` by name, at `TrainConfig.weight_decay`; `rows` by name, a (rows, 1)
    tensor of per-row rates for a matrix whose rows decay differently (a fused query/key/value projection).
    Every other trainable parameter does not decay."""

    decayed: set[str] = field(default_factory=set)
    rows: dict[str, torch.Tensor] = field(default_factory=dict)


def default_decay(model: nn.Module, config: TrainConfig) -> Decay:
    """Decay on every weight matrix and convolution kernel; none on biases, norms or embeddings (which are not
    called `weight`)."""
    return Decay({name for name, p in model.named_parameters() if p.ndim >= 2 and name.endswith("weight")})


def make_optimizer(
    model: nn.Module, config: TrainConfig, decay: Decay | None = None, capturable: bool = False
) -> torch.optim.Optimizer:
    """SGD (or AdamW) over two groups, the parameters `decay.decayed` at `config.weight_decay` and the rest
    without, and a `RowDecay` for the matrices of `decay.rows`.

    Frozen parameters (requires_grad False) are left out, so fine-tuning only the last blocks works.
    `capturable` (CUDA) makes a fused optimiser whose learning rate is a tensor on the device, so that a CUDA
    graph of the step reads the schedule's current value instead of the one it was captured with.
    """
    decay = decay if decay is not None else default_decay(model, config)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decayed = [p for name, p in trainable if name in decay.decayed and name not in decay.rows]
    others = [p for name, p in trainable if name not in decay.decayed or name in decay.rows]
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": others, "weight_decay": 0.0}]
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
    rows = [(p, decay.rows[name].to(p.device)) for name, p in trainable if name in decay.rows]
    if rows:
        RowDecay(rows, optimizer, decoupled=config.optimizer == "adamw")
    return optimizer


class RowDecay:
    """Weight decay of matrices row by row, run just before each optimiser step.

    SGD's weight decay adds `wd * w` to the gradient (before momentum); AdamW's shrinks the weight by
    `lr * wd * w` (decoupled). This does the same with a per-row `wd`. The matrices sit in the optimiser's
    group without decay, so nothing is decayed twice.
    """

    def __init__(
        self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], optimizer: torch.optim.Optimizer, decoupled: bool
    ) -> None:
        self.pairs, self.decoupled = pairs, decoupled
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
