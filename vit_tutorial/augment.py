"""Train-time augmentation on whole batches of uint8 images, on whatever device holds them.

Working on batches instead of one PIL image at a time keeps the data on the GPU when there is one,
and each function takes a `torch.Generator`, so a seeded run draws the same crops and flips again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad by `padding` (reflect) and cut a random window of the original size from each image.

    Args:
        images: (B, C, H, W), any dtype.

    Returns:
        (B, C, H, W), each image shifted by up to `padding` pixels in each direction.
    """
    b, _, h, w = images.shape
    padded = F.pad(images.float(), (padding,) * 4, mode="reflect").to(images.dtype)  # (b, c, h + 2p, w + 2p)
    top = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=generator.device)
    left = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=generator.device)
    rows = (top + torch.arange(h, device=top.device)).to(images.device)  # (b, h)
    cols = (left + torch.arange(w, device=left.device)).to(images.device)  # (b, w)
    batch = torch.arange(b, device=images.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
    return cropped.permute(0, 3, 1, 2).contiguous()


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2. (B, C, H, W) -> (B, C, H, W)."""
    flip = torch.rand(images.shape[0], generator=generator, device=generator.device) < 0.5
    flip = flip.to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a `size` x `size` square at a random centre of each image (DeVries & Taylor, 2017).

    The square may hang over the border, as in the original. (B, C, H, W) -> (B, C, H, W).
    """
    b, _, h, w = images.shape
    cy = torch.randint(0, h, (b, 1, 1), generator=generator, device=generator.device).to(images.device)
    cx = torch.randint(0, w, (b, 1, 1), generator=generator, device=generator.device).to(images.device)
    ys = torch.arange(h, device=images.device)[None, :, None]
    xs = torch.arange(w, device=images.device)[None, None, :]
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)  # (b, h, w)
    return images * (~inside)[:, None].to(images.dtype)


def augment_batch(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Apply the named augmentation (see `TrainConfig.augment`) to a (B, C, H, W) batch."""
    if kind == "none":
        return images
    if kind not in ("flip-crop", "flip-crop-cutout"):
        raise ValueError(f"unknown augmentation {kind!r}; expected 'none', 'flip-crop' or 'flip-crop-cutout'")
    images = random_flip(random_crop(images, 4, generator), generator)
    if kind == "flip-crop-cutout":
        images = cutout(images, 12, generator)
    return images


def mix_batch(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, mixup: float, cutmix: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al., 2018) or CutMix (Yun et al., 2019) of a batch with itself in shuffled order.

    Args:
        images: (B, C, H, W) float.
        labels: (B,) class indices.
        mixup, cutmix: Beta(alpha, alpha) parameters, 0 for off; with both on, each batch uses one of them.

    Returns:
        Mixed images (B, C, H, W) and soft targets (B, num_classes) that sum to 1.
    """
    import numpy as np

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())
    rng = np.random.default_rng(seed)  # torch's Beta sampler takes no generator; this keeps runs seeded
    use_cutmix = cutmix > 0 and (mixup == 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    order = torch.randperm(images.shape[0], generator=generator, device=generator.device).to(images.device)
    if use_cutmix:
        h, w = images.shape[-2:]
        cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        images = images.clone()
        images[:, :, top:bottom, left:right] = images[order][:, :, top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (h * w)  # the area actually pasted
    else:
        images = lam * images + (1 - lam) * images[order]
    one_hot = torch.nn.functional.one_hot(labels, num_classes).float()
    return images, lam * one_hot + (1 - lam) * one_hot[order]
