"""Where the model looks: attention weights from images, CLS-attention maps, rollout, the classic overlay.

`attend(model, images)` is the one way from images to attention weights: one forward pass with
`return_attention=True`, in eval mode, in batches. Everything else here is a pure tensor function of the
attentions it returns, shaped (B, depth, heads, n, n) with n = 1 + the number of patches and token 0 the
CLS token, or one image's (depth, heads, n, n); results keep the batch axis only when the input had it.
Maps are on the patch grid, (B, y, x): patch k sits in row y = k // g and column x = k % g.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import require_int, require_number

HEAD_FUSIONS = ("mean", "max", "min")
FLAT_SHARE = 0.1  # see flat_threshold


@torch.no_grad()
def attend(
    model: nn.Module,
    images: torch.Tensor,
    *,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    normalised: bool = False,
    batch_size: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and attention weights of `model` for `images`, from the same forward pass, in eval mode.

    Args:
        images: (B, 3, H, W) uint8 or floats in [0, 1] (normalised here, as for training), or already
            normalised floats with `normalised=True`.
        device: where the model runs (default: where its weights are).
        precision: "fp32" or "bf16" (autocast).

    Returns:
        logits (B, classes) and attentions (B, depth, heads, n, n), float32 on the CPU.
    """
    require_int("batch_size", batch_size)
    from .data import normalise
    from .devices import autocast

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    logits, attentions = [], []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device)
        with autocast(device, precision):
            out, weights = model(batch if normalised else normalise(batch), return_attention=True)
        logits.append(out.float().cpu())
        attentions.append(weights.float().cpu())
    if not logits:
        raise ValueError("attend() needs at least one image, got an empty batch")
    return torch.cat(logits), torch.cat(attentions)


def flat_threshold(num_tokens: int) -> float:
    """Below this spread (largest minus smallest patch weight of a CLS row) a map counts as flat.

    It is a tenth of the weight that perfectly even attention gives each token, 1 / n (0.0059 for the
    book's 17 tokens): the map's brightest patch then gets less than a tenth of an even share more than
    its darkest, a difference the min-max step of the classic recipe stretches to full contrast.
    """
    return FLAT_SHARE / num_tokens


def map_spread(grid: torch.Tensor) -> torch.Tensor:
    """Largest minus smallest weight of each (y, x) map: (B, y, x) -> (B,), or (y, x) -> ()."""
    return grid.amax(dim=(-2, -1)) - grid.amin(dim=(-2, -1))


def _as_batch(attentions: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(depth, heads, n, n) or (B, depth, heads, n, n) -> (B, depth, heads, n, n), and whether it was batched."""
    batched = attentions.ndim == 5
    if attentions.ndim not in (4, 5) or attentions.shape[-1] != attentions.shape[-2]:
        raise ValueError(
            f"expected attentions shaped (B, depth, heads, n, n) or (depth, heads, n, n) as returned by "
            f"attend(model, images), got {tuple(attentions.shape)}"
        )
    patches = attentions.shape[-1] - 1
    if math.isqrt(patches) ** 2 != patches or patches == 0:
        raise ValueError(f"expected n = 1 + a square number of patches (CLS first), got n = {attentions.shape[-1]}")
    return (attentions if batched else attentions[None]), batched


def _to_grid(cls_row: torch.Tensor, batched: bool) -> torch.Tensor:
    """(B, patches) -> (B, y, x), or (y, x) for an unbatched input."""
    grid = math.isqrt(cls_row.shape[-1])
    maps = cls_row.reshape(cls_row.shape[0], grid, grid)  # (b, y, x): patch k at row k // g, column k % g
    return maps if batched else maps[0]


def _check_index(name: str, value: object, size: int, negative: bool, alternative: str = "") -> None:
    low = -size if negative else 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < size:
        raise ValueError(f"{name} must be {alternative}a whole number in [{low}, {size - 1}], got {value!r}")


def cls_attention(attentions: torch.Tensor, layer: int = -1, head: int | None = None) -> torch.Tensor:
    """The CLS query's attention to every patch in one layer, as the patch grid.

    Args:
        attentions: (B, depth, heads, n, n) or (depth, heads, n, n).
        layer: which block, 0-based; negative counts from the last.
        head: one head, or None for the mean over heads.

    Returns:
        (B, y, x) raw attention weights on the g x g patch grid (g = sqrt(n - 1), 4 for the default
        model), or (y, x).
    """
    batch, batched = _as_batch(attentions)
    depth, heads = batch.shape[1:3]
    _check_index("layer", layer, depth, negative=True)
    if head is not None:
        _check_index("head", head, heads, negative=False, alternative="None (the mean) or ")
    rows = batch[:, layer, :, 0, 1:]  # (b, h, patches): the CLS query's weights on the patches
    row = rows.mean(dim=1) if head is None else rows[:, head]
    return _to_grid(row, batched)


def attention_rollout(attentions: torch.Tensor, head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each patch flows into the final CLS token.

    Per layer: fuse the heads (mean, max or min), optionally zero the weakest `discard_ratio` of the
    weights (never the CLS-to-CLS one), add the identity for the residual path, renormalise the rows;
    then multiply the layers from first to last.

    Returns:
        (B, y, x) raw rollout weights of the CLS row over the patches, or (y, x).
    """
    require_number("discard_ratio", discard_ratio, low=0.0, high=0.99)
    batch, batched = _as_batch(attentions)
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    fused = {"mean": batch.mean(dim=2), "max": batch.amax(dim=2), "min": batch.amin(dim=2)}[
        head_fusion
    ]  # (b, depth, n, n)
    b, depth, n, _ = fused.shape
    if discard_ratio > 0:
        flat = fused.reshape(b, depth, n * n)
        weakest = flat.topk(int(n * n * discard_ratio), dim=-1, largest=False).indices  # (b, depth, k)
        keep = torch.ones_like(flat, dtype=torch.bool).scatter(-1, weakest, False)
        keep[..., 0] = True  # the CLS-to-CLS weight is never discarded
        fused = (flat * keep).reshape(b, depth, n, n)
    identity = torch.eye(n, dtype=fused.dtype, device=fused.device)
    layers = fused + identity
    layers = layers / layers.sum(dim=-1, keepdim=True)
    rollout = identity.expand(b, n, n)
    for layer in range(depth):
        rollout = layers[:, layer] @ rollout  # (b, n, n)
    return _to_grid(rollout[:, 0, 1:], batched)


def cls_spread(attentions: torch.Tensor) -> torch.Tensor:
    """How uneven the CLS token's attention over the patches is, per layer: its largest minus its smallest
    patch weight (heads averaged), averaged over the images. 0 for perfectly even attention.

    Args:
        attentions: (B, depth, heads, n, n) or (depth, heads, n, n).

    Returns:
        (depth,) spreads, in attention weight.
    """
    batch, _ = _as_batch(attentions)
    rows = batch[:, :, :, 0, 1:].mean(dim=2)  # (b, depth, patches): CLS row over the patches, heads averaged
    return (rows.amax(dim=-1) - rows.amin(dim=-1)).mean(dim=0)


def _check_image_and_grid(image: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    batched = image.ndim == 4
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"expected an image shaped (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point() or image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"expected image values as floats in [0, 1], got {image.dtype} "
            f"in [{image.min().item()}, {image.max().item()}]; "
            "divide uint8 images by 255 or use vit_tutorial.data.denormalise"
        )
    if grid.ndim != image.ndim - 1 or grid.shape[-1] != grid.shape[-2] or (batched and grid.shape[0] != image.shape[0]):
        expected = "(B, y, x) for a (B, 3, H, W) image" if batched else "(y, x) for a (3, H, W) image"
        raise ValueError(f"expected a grid shaped {expected}, got {tuple(grid.shape)} for image {tuple(image.shape)}")
    return (image if batched else image[None]), (grid if batched else grid[None]), batched


def overlay_steps(
    image: torch.Tensor, grid: torch.Tensor, amplify: float = 2.0, *, scale: float | torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Every step of the classic overlay, for teaching; `attention_overlay` returns the last one.

    Args:
        image: (3, H, W) or (B, 3, H, W), floats in [0, 1].
        grid: (y, x) or (B, y, x) raw attention (from `cls_attention` or `attention_rollout`).
        scale: None for the classic min-max normalisation (step 4), which stretches every map to full
            contrast, a flat one too; or a weight (per image: (B,)) that maps to 1 on a scale from 0, shared
            by the maps compared, so that a flat map looks flat (`shared_scale`).

    Returns:
        "resized" (B, H, W): the grid upsampled bilinearly (align_corners=False);
        "normalised" (B, H, W): min-max scaled to [0, 1] (a constant map becomes all ones), or divided by
        `scale` and clipped to [0, 1];
        "product" (B, 3, H, W): image times the normalised map;
        "amplified" (B, 3, H, W): times `amplify`;
        "overlay" (B, 3, H, W): clipped to [0, 1]. Without a batch axis in, none out.
    """
    require_number("amplify", amplify, low=0.0)
    images, grids, batched = _check_image_and_grid(image, grid)
    size = images.shape[-2:]
    resized = F.interpolate(grids[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    if scale is None:
        low = resized.amin(dim=(1, 2), keepdim=True)
        span = resized.amax(dim=(1, 2), keepdim=True) - low
        # a constant map stays constant: the resize leaves rounding noise (a few ulps) that min-max would stretch
        varies = span > 1e-6 * resized.abs().amax(dim=(1, 2), keepdim=True)
        normalised = torch.where(varies, (resized - low) / span.clamp_min(1e-12), torch.ones_like(resized))
    else:
        top = torch.as_tensor(scale, dtype=resized.dtype).reshape(-1, 1, 1)
        normalised = (resized / top.clamp_min(1e-12)).clamp(0, 1)
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


def shared_scale(attentions: torch.Tensor) -> torch.Tensor:
    """One colour scale for all of an image's CLS maps: its largest CLS-to-patch weight over every layer and
    head. (B, depth, heads, n, n) -> (B,), or (depth, heads, n, n) -> ()."""
    batch, batched = _as_batch(attentions)
    top = batch[:, :, :, 0, 1:].amax(dim=(1, 2, 3))
    return top if batched else top[0]


def attention_overlay(
    image: torch.Tensor, grid: torch.Tensor, amplify: float = 2.0, *, scale: float | torch.Tensor | None = None
) -> torch.Tensor:
    """The classic tutorial's picture: the image lit by its attention map, (3, H, W) or (B, 3, H, W) in [0, 1]
    (`scale`: see `overlay_steps`)."""
    return overlay_steps(image, grid, amplify, scale=scale)["overlay"]
