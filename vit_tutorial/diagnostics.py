"""What a run records about itself each epoch, beyond loss and accuracy: is every layer still attending?

A layer whose query and key weights shrink towards zero gives every token the same score, so its
softmax is uniform and the layer only averages. Weight decay alone does that to a weight whose gradient
is too weak to resist it (chapter 6). Each epoch, `measure` records for the model being validated:

- `qk_norms`: per block, the Frobenius norms of the query and key weights;
- `cls_spread`: per layer, how uneven the CLS token's attention is over the patches, on a fixed batch of
  validation images (`attention.cls_spread`; 0 is uniform);
- `train_clean_accuracy`: accuracy on a fixed slice of the training images in eval mode, without
  augmentation: whether the model fits its training data, which augmented accuracy cannot say.

`uniform_layers` names the layers whose spread is below `attention.flat_threshold`, and `gone_uniform` those
that got there during the run: a freshly initialised model attends almost evenly everywhere (its query and
key weights are small), so uniform attention is a symptom only once a layer has attended, or once its
query and key weights have shrunk well below where they started.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .attention_maps import attend, cls_spread, flat_threshold
from .data import CIFAR10, Split
from .devices import autocast
from .evaluate import loss_and_accuracy
from .model import INIT_STD
from .parameters import query_key_weights
from .record import EpochEntry
from .registry import spec_for

PROBE_IMAGES = 128  # validation images whose CLS attention is measured each epoch
SHRUNK = 0.1  # query/key norms below this share of their first epoch's (or a fresh init's) count as collapsed
CLEAN_TRAIN_IMAGES = 5000  # training images whose accuracy is measured each epoch, without augmentation


@torch.no_grad()
def qk_norms(model: nn.Module) -> list[list[float]]:
    """[[|W_q|, |W_k|], ...], one pair per attention layer (Frobenius norms)."""
    return [
        [weight[:d].float().norm().item(), weight[d : 2 * d].float().norm().item()]
        for weight, d in query_key_weights(model)
    ]


@torch.no_grad()
def clean_accuracy(model: nn.Module, split: Split, device: torch.device, precision: str = "fp32") -> float:
    """Accuracy on `split` in eval mode, without augmentation."""
    with autocast(device, precision):
        return loss_and_accuracy(model, split, device)[1]


def probe_images(model_config: Any, val: Split) -> torch.Tensor | None:
    """The fixed validation images whose CLS attention is measured for a model of `model_config`, or None:
    the spread is measured for the from-scratch ViT only (a model without attention has none, and ViT-B/16's
    would cost minutes an epoch)."""
    spec = spec_for(model_config)
    return val.images[:PROBE_IMAGES] if spec.attention and spec.from_scratch and len(val) else None


class Diagnostics:
    """What a run measures each epoch for the model it validates, on images fixed for the run's life: the CLS
    spread on `probe` (uint8 validation images; None for a model without attention weights) and the accuracy
    on `clean` (training images; None to skip)."""

    def __init__(self, probe: torch.Tensor | None, clean: Split | None) -> None:
        self.probe, self.clean = probe, clean

    @classmethod
    def for_run(cls, model_config: Any, data: CIFAR10) -> Diagnostics:
        """The run's fixed images: `PROBE_IMAGES` validation images, `CLEAN_TRAIN_IMAGES` training images."""
        return cls(probe_images(model_config, data.val), data.train.subset(CLEAN_TRAIN_IMAGES, seed=1))

    def __call__(self, model: nn.Module, device: torch.device, precision: str = "fp32") -> dict[str, Any]:
        return measure(model, probe=self.probe, clean=self.clean, device=device, precision=precision)

    def of_weights(self, model: nn.Module) -> dict[str, Any]:
        """The diagnostics of a model's weights alone, on the CPU: query/key norms and CLS spreads, no accuracy
        (a warm start's checkpoint as loaded, or the kept weights of a shipped record)."""
        return measure(model, probe=self.probe, clean=None, device=torch.device("cpu"))


def measure(
    model: nn.Module,
    *,
    probe: torch.Tensor | None,
    clean: Split | None,
    device: torch.device,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The diagnostics of one epoch for `model` (the one being validated): `probe` is a fixed batch of
    uint8 validation images (None for a model without attention weights), `clean` a fixed slice of
    training images (None to skip)."""
    found: dict[str, Any] = {}
    if query_key_weights(model):
        found["qk_norms"] = qk_norms(model)
    if probe is not None:
        attentions = attend(model, probe, device=device, precision=precision)[1]
        found["cls_spread"] = [round(value, 6) for value in cls_spread(attentions).tolist()]
    if clean is not None:
        found["train_clean_accuracy"] = clean_accuracy(model, clean, device, precision)
    return found


@torch.no_grad()
def revive_collapsed(model: nn.Module, generator: torch.Generator, scale: float = 1.0) -> list[int]:
    """Give every attention layer whose query or key weights have collapsed (norm below `SHRUNK` of what a
    fresh initialisation gives) fresh query and key weights, drawn at an initialisation's size (`INIT_STD`,
    cut off at two standard deviations) and multiplied by `scale`; return those layers, 1-based. Both are
    redrawn because each one's gradient is proportional to the other: with both near zero the layer sits at a
    saddle that training alone leaves only slowly. At `scale` 1 the new attention is almost uniform, as in a
    fresh model, and its gradient small; the scores grow with the square of `scale`. The values, and every
    other layer, are kept."""
    revived = []
    std = INIT_STD * scale
    for layer, ((weight, d), norms) in enumerate(zip(query_key_weights(model), qk_norms(model)), start=1):
        if min(norms) < SHRUNK * INIT_STD * math.sqrt(d * weight.shape[1]):
            new = torch.empty(2 * d, weight.shape[1])
            nn.init.trunc_normal_(new, std=std, a=-2 * std, b=2 * std, generator=generator)
            weight[: 2 * d] = new.to(weight)
            revived.append(layer)
    return revived


def uniform_layers(spreads: list[float] | None, num_tokens: int) -> list[int]:
    """The 1-based layers whose CLS attention is uniform by their `spreads` (one per layer, as an epoch's
    `cls_spread` records them): those below the threshold."""
    limit = flat_threshold(num_tokens)
    return [i + 1 for i, spread in enumerate(spreads or []) if spread < limit]


def gone_uniform(history: list[EpochEntry], num_tokens: int) -> list[int]:
    """The 1-based layers uniform in the last epoch of `history` that were not uniform in an earlier epoch, or
    whose query or key norm fell below `SHRUNK` of its first recorded value."""
    if not history:
        return []
    last, first = history[-1], history[0]
    limit = flat_threshold(num_tokens)
    found = []
    for layer in uniform_layers(last.cls_spread, num_tokens):
        i = layer - 1
        attended = any((entry.cls_spread or [0.0] * layer)[i] >= limit for entry in history[:-1])
        norms, start = last.qk_norms or [], first.qk_norms or []
        shrunk = bool(norms and start) and min(n / max(s, 1e-12) for n, s in zip(norms[i], start[i])) < SHRUNK
        if attended or shrunk:
            found.append(layer)
    return found
