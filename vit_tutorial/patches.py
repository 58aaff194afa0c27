"""Cutting images into patches and putting them back, with einops.

Axis names used across the package: b batch, c channels, h w patch-grid rows and columns,
p1 p2 pixels inside a patch, n tokens, d features.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange

PATCHIFY = "b c (h p1) (w p2) -> b (h w) (p1 p2 c)"
UNPATCHIFY = "b (h w) (p1 p2 c) -> b c (h p1) (w p2)"


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping square patches, row by row, each flattened.

    Args:
        images: (B, C, H, W) with H and W multiples of `patch_size`.
        patch_size: side of a patch in pixels.

    Returns:
        (B, (H / patch_size) * (W / patch_size), patch_size * patch_size * C); patch k is row k // w,
        column k % w of the grid, and its pixels are ordered row, column, channel.
    """
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
    if patches.ndim != 3 or patches.shape[-1] != patch_size * patch_size * channels:
        raise ValueError(
            f"unpatchify expects (B, N, {patch_size * patch_size * channels}) for patch_size {patch_size} and "
            f"{channels} channels, got shape {tuple(patches.shape)}"
        )
    grid = math.isqrt(patches.shape[1])
    if grid * grid != patches.shape[1]:
        raise ValueError(f"unpatchify needs a square number of patches, got {patches.shape[1]}")
    return rearrange(patches, UNPATCHIFY, h=grid, w=grid, p1=patch_size, p2=patch_size, c=channels)
