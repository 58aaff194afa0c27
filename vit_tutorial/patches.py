"""Cutting images into patches and putting them back, with einops.

Axis names used across the package (einops patterns, shape comments and docstrings):
b batch, c channels, H W image rows and columns in pixels, y x patch-grid rows and columns,
p1 p2 pixels inside a patch, n tokens (the patches, plus CLS in the encoder), h heads, d features.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange

from .errors import require_int

PATCHIFY = "b c (y p1) (x p2) -> b (y x) (p1 p2 c)"
UNPATCHIFY = "b (y x) (p1 p2 c) -> b c (y p1) (x p2)"


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping square patches, row by row, each flattened.

    Args:
        images: (B, C, H, W) with H and W multiples of `patch_size`.
        patch_size: side of a patch in pixels.

    Returns:
        (B, (H / patch_size) * (W / patch_size), patch_size * patch_size * C); patch k is row k // g,
        column k % g of the g-wide grid, and its pixels are ordered row, column, channel.
    """
    require_int("patch_size", patch_size)
    if images.ndim != 4:
        raise ValueError(f"patchify expects images shaped (B, C, H, W), got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not divisible by patch_size {patch_size}")
    return rearrange(images, PATCHIFY, p1=patch_size, p2=patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """Inverse of `patchify` for a square patch grid.

    Args:
        patches: (B, N, patch_size * patch_size * channels) with N a square number.

    Returns:
        (B, channels, sqrt(N) * patch_size, sqrt(N) * patch_size).
    """
    require_int("patch_size", patch_size)
    require_int("channels", channels)
    if patches.ndim != 3 or patches.shape[-1] != patch_size * patch_size * channels:
        raise ValueError(
            f"unpatchify expects (B, N, {patch_size * patch_size * channels}) for patch_size {patch_size} and "
            f"{channels} channels, got shape {tuple(patches.shape)}"
        )
    grid = math.isqrt(patches.shape[1])
    if grid * grid != patches.shape[1]:
        raise ValueError(f"unpatchify needs a square number of patches, got {patches.shape[1]}")
    return rearrange(patches, UNPATCHIFY, y=grid, x=grid, p1=patch_size, p2=patch_size, c=channels)
