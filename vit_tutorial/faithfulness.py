"""Do attention maps show what the model uses? The deletion test: hide what a map ranks highest, watch the
prediction fall.

For each image, a map ranks the 16 patches; the patches are then hidden in that order, one more at each
step, and the model's probability for the true class is measured after every step, from all patches shown
(step 0) to none (step 16). A map that points at what the model relies on makes the probability fall
fast: the area under its deletion curve (the mean over the 17 steps) is small. Two controls bracket it:
patches hidden in random order, and in the map's reverse order (least attended first), which should hold
the probability up longest.

A hidden patch is left out of the sequence: its token is dropped, and the model attends over the rest
(`ViT(..., keep=...)`), which a transformer can do because nothing in it depends on the number of tokens.
Filling the patch with the mean colour instead (`hide="mean"`) shows the model a grey square it never saw
in training, and what it makes of that square is part of what is measured.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .data import normalise
from .patches import patchify, unpatchify
from .registry import config_of

HIDES = ("drop", "mean")


def ranking(maps: torch.Tensor) -> torch.Tensor:
    """Patch order, most important first: (B, y, x) maps -> (B, patches) indices (ties by patch number)."""
    flat = maps.flatten(1)
    return torch.sort(flat, dim=1, descending=True, stable=True).indices


def random_ranking(batch: int, patches: int, seed: int = 0) -> torch.Tensor:
    """A random patch order per image, the control: (batch, patches)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(patches, generator=generator) for _ in range(batch)])


@torch.no_grad()
def true_class_probability(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor | None, hide: str = "drop"
) -> torch.Tensor:
    """The model's probability for each image's true class with only the patches `keep` (B, m) shown.

    Args:
        images: (B, 3, H, W) uint8.
        keep: patch indices to show (the same count for every image), or None for all.
        hide: "drop" leaves the other patches' tokens out; "mean" paints them the data set's mean colour.
    """
    if hide not in HIDES:
        raise ValueError(f"hide must be one of {HIDES}, got {hide!r}")
    model.eval()
    x = normalise(images)
    if keep is None:
        logits = model(x)
    elif hide == "drop":
        logits = model(x, keep=keep)
    else:
        size = config_of(model).patch_size
        patches = patchify(x, size)  # (b, patches, p1 p2 c)
        shown = torch.zeros(patches.shape[:2], dtype=torch.bool).scatter(1, keep, True)
        logits = model(unpatchify(patches * shown[..., None], size))  # 0 is the mean colour once normalised
    return logits.float().softmax(-1).gather(1, labels[:, None])[:, 0]


def deletion_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    order: torch.Tensor,
    *,
    hide: str = "drop",
    batch_size: int = 500,
) -> torch.Tensor:
    """The true-class probability as the patches are hidden in `order` (B, patches), most important first:
    (B, patches + 1), step k having the first k patches of the order hidden."""
    patches = order.shape[1]
    curves = []
    for start in range(0, images.shape[0], batch_size):
        part = slice(start, start + batch_size)
        # step k shows the patches after the first k of the order; at the last step none (CLS alone)
        steps = [
            true_class_probability(model, images[part], labels[part], order[part, k:] if k else None, hide)
            for k in range(patches + 1)
        ]
        curves.append(torch.stack(steps, dim=1))
    return torch.cat(curves)


def area(curves: torch.Tensor) -> float:
    """The area under deletion curves (B, steps): the mean probability over steps and images, in [0, 1]."""
    return curves.mean().item()


@torch.no_grad()
def occlusion_ranking(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, hide: str = "drop") -> torch.Tensor:
    """The patches ranked by how much hiding each one alone lowers the true class's probability (the
    "ground truth" a map is checked against, at 16 forward passes per image): (B, patches)."""
    patches = config_of(model).num_patches
    full = true_class_probability(model, images, labels, None, hide)
    drops = []
    everything = torch.arange(patches)
    for p in range(patches):
        keep = everything[everything != p].expand(len(images), -1)
        drops.append(full - true_class_probability(model, images, labels, keep, hide))
    side = math.isqrt(patches)
    return ranking(torch.stack(drops, dim=1).reshape(-1, side, side))
