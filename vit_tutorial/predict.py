"""Top-k prediction for any image file: any size or mode is turned into a CIFAR-sized RGB input."""

from __future__ import annotations

import os

import torch
from torch import nn

from .data import CLASSES, normalise
from .images import as_rgb, read_rgb


def to_cifar_image(image, size: int = 32) -> torch.Tensor:
    """A PIL image of any size and mode -> (3, size, size) float tensor in [0, 1].

    The image is made RGB as `images.as_rgb` does (high bit depths scaled, transparency on white), the
    centre square is kept (so nothing is stretched), and the square is resized with antialiasing.
    """
    from PIL import Image

    image = as_rgb(image)
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    return pixels.permute(2, 0, 1).float() / 255.0  # (3, size, size)


def load_image(source: str | os.PathLike | bytes, size: int = 32) -> torch.Tensor:
    """Read an image file (or an uploaded file's bytes) as a (3, size, size) float tensor in [0, 1].

    Raises:
        ImageError: one line, when the file is missing or is not an image Pillow can read.
    """
    return to_cifar_image(read_rgb(source), size)


@torch.no_grad()
def top_k(model: nn.Module, image: torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
    """The k most probable classes for one (3, H, W) image in [0, 1], as (class name, probability)."""
    if not 1 <= k <= len(CLASSES):
        raise ValueError(f"top-k must be between 1 and {len(CLASSES)}, got {k}")
    model.eval()
    device = next(model.parameters()).device
    probabilities = model(normalise(image[None].to(device))).float().softmax(dim=-1)[0].cpu()
    values, indices = probabilities.topk(k)
    return [(CLASSES[i], v) for i, v in zip(indices.tolist(), values.tolist())]
