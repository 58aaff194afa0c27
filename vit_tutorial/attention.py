"""Where the model looks: CLS-attention maps, attention rollout, and the classic overlay.

Pure tensor functions. They take the attentions that `model(x, return_attention=True)` returns,
shaped (B, depth, heads, T, T) with T = 1 + number of patches and token 0 the CLS token, or one
image's (depth, heads, T, T); results keep the batch axis only when the input had it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HEAD_FUSIONS = ("mean", "max", "min")


def _as_batch(attentions: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(depth, heads, T, T) or (B, depth, heads, T, T) -> (B, depth, heads, T, T), and whether it was batched."""
    batched = attentions.ndim == 5
    if attentions.ndim not in (4, 5) or attentions.shape[-1] != attentions.shape[-2]:
        raise ValueError(
            f"expected attentions shaped (B, depth, heads, T, T) or (depth, heads, T, T) as returned by "
            f"model(x, return_attention=True), got {tuple(attentions.shape)}"
        )
    patches = attentions.shape[-1] - 1
    if math.isqrt(patches) ** 2 != patches or patches == 0:
        raise ValueError(f"expected T = 1 + a square number of patches (CLS first), got T = {attentions.shape[-1]}")
    return (attentions if batched else attentions[None]), batched


def _to_grid(cls_row: torch.Tensor, batched: bool) -> torch.Tensor:
    """(B, num_patches) -> (B, g, g), or (g, g) for an unbatched input."""
    grid = math.isqrt(cls_row.shape[-1])
    maps = cls_row.reshape(cls_row.shape[0], grid, grid)  # (b, h, w): patch k at row k // g, column k % g
    return maps if batched else maps[0]


def cls_attention(attentions: torch.Tensor, layer: int = -1, head: int | None = None) -> torch.Tensor:
    """The CLS query's attention to every patch in one layer, as the patch grid.

    Args:
        attentions: (B, depth, heads, T, T) or (depth, heads, T, T).
        layer: which block, 0-based; negative counts from the last.
        head: one head, or None for the mean over heads.

    Returns:
        (B, g, g) raw attention weights (g = sqrt(T - 1), 4 for the default model), or (g, g).
    """
    batch, batched = _as_batch(attentions)
    depth, heads = batch.shape[1:3]
    if not -depth <= layer < depth:
        raise ValueError(f"layer must be in [{-depth}, {depth - 1}] for {depth} layers, got {layer}")
    if head is not None and not 0 <= head < heads:
        raise ValueError(f"head must be None (mean) or in [0, {heads - 1}], got {head}")
    rows = batch[:, layer, :, 0, 1:]  # (b, h, n): the CLS query's weights on the patches
    row = rows.mean(dim=1) if head is None else rows[:, head]
    return _to_grid(row, batched)


def attention_rollout(attentions: torch.Tensor, head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each patch flows into the final CLS token.

    Per layer: fuse the heads (mean, max or min), optionally zero the weakest `discard_ratio` of the
    weights (never the CLS-to-CLS one), add the identity for the residual path, renormalise the rows;
    then multiply the layers from first to last.

    Returns:
        (B, g, g) raw rollout weights of the CLS row over the patches, or (g, g).
    """
    batch, batched = _as_batch(attentions)
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    fused = {"mean": batch.mean(dim=2), "max": batch.amax(dim=2), "min": batch.amin(dim=2)}[
        head_fusion
    ]  # (b, depth, t, t)
    b, depth, t, _ = fused.shape
    if discard_ratio > 0:
        flat = fused.reshape(b, depth, t * t)
        weakest = flat.topk(int(t * t * discard_ratio), dim=-1, largest=False).indices  # (b, depth, k)
        keep = torch.ones_like(flat, dtype=torch.bool).scatter(-1, weakest, False)
        keep[..., 0] = True  # the CLS-to-CLS weight is never discarded
        fused = (flat * keep).reshape(b, depth, t, t)
    identity = torch.eye(t, dtype=fused.dtype, device=fused.device)
    layers = fused + identity
    layers = layers / layers.sum(dim=-1, keepdim=True)
    rollout = identity.expand(b, t, t)
    for layer in range(depth):
        rollout = layers[:, layer] @ rollout  # (b, t, t)
    return _to_grid(rollout[:, 0, 1:], batched)


def cls_spread(attentions: torch.Tensor) -> torch.Tensor:
    """How uneven the CLS token's attention over the patches is, per layer: its largest minus its smallest
    patch weight (heads averaged), averaged over the images. 0 for perfectly even attention.

    Args:
        attentions: (B, depth, heads, T, T) or (depth, heads, T, T).

    Returns:
        (depth,) spreads, in attention weight.
    """
    batch, _ = _as_batch(attentions)
    rows = batch[:, :, :, 0, 1:].mean(dim=2)  # (b, depth, n): CLS row over the patches, heads averaged
    return (rows.amax(dim=-1) - rows.amin(dim=-1)).mean(dim=0)


def _check_image_and_grid(image: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    batched = image.ndim == 4
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"expected an image shaped (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point() or image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"expected image values as floats in [0, 1], got {image.dtype} "
            f"in [{image.min().item()}, {image.max().item()}]; "
            "divide uint8 images by 255 or use vit_tutorial.data.denormalize"
        )
    if grid.ndim != image.ndim - 1 or grid.shape[-1] != grid.shape[-2] or (batched and grid.shape[0] != image.shape[0]):
        expected = "(B, g, g) for a (B, 3, H, W) image" if batched else "(g, g) for a (3, H, W) image"
        raise ValueError(f"expected a grid shaped {expected}, got {tuple(grid.shape)} for image {tuple(image.shape)}")
    return (image if batched else image[None]), (grid if batched else grid[None]), batched


def overlay_steps(image: torch.Tensor, grid: torch.Tensor, amplify: float = 2.0) -> dict[str, torch.Tensor]:
    """Every step of the classic overlay, for teaching; `attention_overlay` returns the last one.

    Args:
        image: (3, H, W) or (B, 3, H, W), floats in [0, 1].
        grid: (g, g) or (B, g, g) raw attention (from `cls_attention` or `attention_rollout`).

    Returns:
        "resized" (B, H, W): the grid upsampled bilinearly (align_corners=False);
        "normalised" (B, H, W): min-max scaled to [0, 1] (a constant map becomes all ones);
        "product" (B, 3, H, W): image times the normalised map;
        "amplified" (B, 3, H, W): times `amplify`;
        "overlay" (B, 3, H, W): clipped to [0, 1]. Without a batch axis in, none out.
    """
    images, grids, batched = _check_image_and_grid(image, grid)
    size = images.shape[-2:]
    resized = F.interpolate(grids[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]  # (b, h, w)
    low = resized.amin(dim=(1, 2), keepdim=True)
    span = resized.amax(dim=(1, 2), keepdim=True) - low
    normalised = torch.where(span > 0, (resized - low) / span.clamp_min(1e-12), torch.ones_like(resized))
    product = images * normalised[:, None]
    amplified = product * amplify
    steps = {
        "resized": resized,
        "normalised": normalised,
        "product": product,
        "amplified": amplified,
        "overlay": amplified.clamp(0, 1),
    }
    return steps if batched else {name: value[0] for name, value in steps.items()}


def attention_overlay(image: torch.Tensor, grid: torch.Tensor, amplify: float = 2.0) -> torch.Tensor:
    """The classic tutorial's picture: the image lit by its attention map, (3, H, W) or (B, 3, H, W) in [0, 1]."""
    return overlay_steps(image, grid, amplify)["overlay"]
