"""Train-time augmentation on whole batches of uint8 images, on whatever device holds them.

Working on batches instead of one PIL image at a time keeps the data on the GPU when there is one,
and each function takes a `torch.Generator`, so a seeded run draws the same crops and flips again.

TrivialAugment-Wide (Müller & Hutter, 2021) and RandAugment (Cubuk et al., 2020) are applied per sample:
every image of a batch draws its own operation and magnitude, and each operation computes what
torchvision's `transforms.v2.functional` computes for one image, for the images that drew it.

`Pipeline` is the whole way from stored images to what a training step sees (the uint8 augmentation,
normalisation, random erasing, mixup / CutMix), built from a `TrainConfig` and called in one place.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .config import AUGMENTATIONS, TrainConfig


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad by `padding` (reflect) and cut a random window of the original size from each image.

    Args:
        images: (B, C, H, W), any dtype.

    Returns:
        (B, C, H, W), each image shifted by up to `padding` pixels in each direction.
    """
    b, _, h, w = images.shape
    padded = F.pad(images.float(), (padding,) * 4, mode="reflect").to(images.dtype)  # (b, c, H + 2p, W + 2p)
    top = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=generator.device)
    left = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=generator.device)
    rows = (top + torch.arange(h, device=top.device)).to(images.device)  # (b, H)
    cols = (left + torch.arange(w, device=left.device)).to(images.device)  # (b, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (b, H, W, c)
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
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)  # (b, H, W)
    return images * (~inside)[:, None].to(images.dtype)


# Automatic augmentation: one table of operations, two ways of drawing from it ----------------------------

BINS = 31  # magnitude levels 0..30, as in torchvision
# Largest magnitude of each operation (level 30), and how many bits posterize drops at level 30.
TRIVIAL_AUGMENT_WIDE = {"shear": 0.99, "translate": 32.0, "rotate": 135.0, "enhance": 0.99, "posterize_drop": 6}
RAND_AUGMENT = {"shear": 0.3, "translate": 150.0 / 331.0 * 32, "rotate": 30.0, "enhance": 0.9, "posterize_drop": 4}


@functools.lru_cache(maxsize=16)
def _table_on(name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The magnitude table of a space and the signed-operation mask, made once per device."""
    space = {"trivialaugment": TRIVIAL_AUGMENT_WIDE, "randaugment": RAND_AUGMENT}[name]
    signed = torch.tensor([operation.signed for operation in AUTO_AUGMENT])
    return magnitude_table(space).to(device), signed.to(device)


def magnitude_table(space: dict[str, float]) -> torch.Tensor:
    """(len(OPERATIONS), BINS) float64: the unsigned magnitude of every operation at every level.

    Built exactly as torchvision builds its augmentation spaces (float32 `linspace`), so that a level
    means the same number here and there. Posterize holds bits kept, solarize the threshold fraction.
    """
    zero = torch.zeros(BINS, dtype=torch.float64)
    return torch.stack([operation.levels(space) if operation.levels else zero for operation in AUTO_AUGMENT])


def _up_to(largest: str):
    """Levels from 0 to the space's `largest` magnitude of that kind, evenly spaced."""
    return lambda space: torch.linspace(0.0, space[largest], BINS).double()


def _posterize_levels(space: dict[str, float]) -> torch.Tensor:
    """Bits kept: 8 at level 0, down by the space's `posterize_drop` at level 30."""
    return (8 - (torch.arange(BINS) / ((BINS - 1) / space["posterize_drop"]))).round().int().double()


def trivial_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """TrivialAugment-Wide: each image gets one random operation at a random level, with a random sign.

    Args:
        images: (B, C, H, W) uint8.
    """
    b = images.shape[0]
    op = _randint(len(OPERATIONS), b, generator, images.device)
    level = _randint(BINS, b, generator, images.device)
    return apply_operations(images, op, _signed_magnitude("trivialaugment", op, level, generator))


def rand_augment(images: torch.Tensor, generator: torch.Generator, n: int = 2, m: int = 9) -> torch.Tensor:
    """RandAugment: `n` random operations in a row per image, all at level `m` (0..30), each with a random sign.

    Args:
        images: (B, C, H, W) uint8.
    """
    b = images.shape[0]
    level = torch.full((b,), m, dtype=torch.long, device=images.device)
    for _ in range(n):
        op = _randint(len(OPERATIONS), b, generator, images.device)
        images = apply_operations(images, op, _signed_magnitude("randaugment", op, level, generator))
    return images


def _randint(high: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=generator.device).to(device)


def _signed_magnitude(space: str, op: torch.Tensor, level: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B,) float64 magnitudes: the table's value at `level`, negated with probability 1/2 for signed operations."""
    table, signed = _table_on(space, op.device)
    flip = (torch.rand(op.shape[0], generator=generator, device=generator.device) <= 0.5).to(op.device)
    return torch.where(signed[op] & flip, -table[op, level], table[op, level])


def apply_operations(images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Apply operation `op[i]` (an index into OPERATIONS) with `magnitude[i]` to image i.

    Each operation runs only on the images that drew it, so a batch costs about one operation per image;
    learning how many drew each costs one host synchronisation per call (every operation on every image,
    with shapes that do not depend on the draw, measured 16 times slower on the CPU).

    Args:
        images: (B, C, H, W) uint8.
        op: (B,) int64 operation indices.
        magnitude: (B,) float64 signed magnitudes, in the units of `magnitude_table`.
    """
    out = images.clone()
    order = torch.argsort(op, stable=True)  # the images grouped by the operation they drew
    counts = torch.bincount(op, minlength=len(OPERATIONS)).tolist()
    start = counts[0]  # identity: nothing to do
    for operation, count in zip(AUTO_AUGMENT[1:], counts[1:]):
        if count:
            chosen = order[start : start + count]
            out[chosen] = operation.fn(images[chosen], magnitude[chosen])
        start += count
    return out


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """(B,) float64 -> (B, 1, 1, 1) float32, rounded as torchvision rounds a Python float factor."""
    return values.float()[:, None, None, None]


def affine_theta(angle, translate_x, translate_y, shear_x, shear_y, center_x, center_y) -> torch.Tensor:
    """Per-sample inverse affine matrices (B, 2, 3) float32, as torchvision's `_get_inverse_affine_matrix`.

    All arguments are (B,) float64 tensors: angle and shears in degrees, translation in pixels, and the
    centre in pixels relative to the image centre.
    """
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a  # the inverse of [[a, b], [c, d]], whose determinant is 1
    m2 = center_x - m0 * (center_x + translate_x) - m1 * (center_y + translate_y)
    m5 = center_y - m3 * (center_x + translate_x) - m4 * (center_y + translate_y)
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).float().view(-1, 2, 3)


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample each image through its own inverse affine matrix: nearest neighbour, zeros outside.

    Args:
        images: (B, C, H, W) uint8.
        theta: (B, 2, 3) float32 from `affine_theta`.
    """
    b, _, h, w = images.shape
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=images.device)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=images.device)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=images.device)], dim=-1)
    rescaled = theta.transpose(1, 2).clone()  # (b, 3, 2)
    rescaled[..., 0] /= 0.5 * w
    rescaled[..., 1] /= 0.5 * h
    grid = base.view(1, h * w, 3).expand(b, -1, -1).bmm(rescaled)  # (b, H * W, 2)
    sampled = F.grid_sample(
        images.float(), grid.view(b, h, w, 2), mode="nearest", padding_mode="zeros", align_corners=False
    )
    return sampled.round().to(images.dtype)


def _geometric(images, magnitude, *, angle=None, translate=(None, None), shear=(None, None), corner=False):
    zero = torch.zeros_like(magnitude)
    h, w = images.shape[-2:]
    center = (zero - w * 0.5, zero - h * 0.5) if corner else (zero, zero)
    theta = affine_theta(
        zero if angle is None else angle,
        *(zero if t is None else t for t in translate),
        *(zero if s is None else s for s in shear),
        *center,
    )
    return warp(images, theta)


def _shear(images, magnitude, axis):
    degrees = torch.rad2deg(torch.atan(magnitude))
    shear = (degrees, None) if axis == 0 else (None, degrees)
    return _geometric(images, magnitude, shear=shear, corner=True)  # torchvision shears about the top-left corner


def _translate(images, magnitude, axis):
    pixels = torch.trunc(magnitude)  # torchvision translates by int(magnitude)
    return _geometric(images, magnitude, translate=(pixels, None) if axis == 0 else (None, pixels))


def _rotate(images, magnitude):
    angle = torch.remainder(magnitude, 360.0)
    rotated = _geometric(images, magnitude, angle=-angle)
    for quarter in (1, 2, 3):  # torchvision turns exact right angles with rot90, not by resampling
        exact = (angle == 90.0 * quarter)[:, None, None, None]
        rotated = torch.where(exact, torch.rot90(images, k=quarter, dims=(-2, -1)), rotated)
    return rotated


def blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """images * factor + other * (1 - factor), clamped and truncated to uint8 as torchvision's `_blend`.

    Args:
        images: (B, C, H, W) uint8; other: broadcastable float32; factor: (B,) float64.
    """
    mixed = torch.addcmul(
        images.float() * _per_sample(factor), other, _per_sample(1.0 - factor)
    )  # fused, as torchvision's add_
    return mixed.clamp(0, 255).to(images.dtype)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 1, H, W) float32 luma, floored as torchvision does for integer images."""
    r, g, b = images.float().unbind(dim=1)
    return (r * 0.2989 + g * 0.587 + b * 0.114).floor()[:, None]


def _brightness(images, magnitude):
    return blend(images, torch.zeros((), device=images.device), 1.0 + magnitude)


def _color(images, magnitude):
    return blend(images, _grayscale(images), 1.0 + magnitude)


def _contrast(images, magnitude):
    return blend(images, _grayscale(images).mean(dim=(-3, -2, -1), keepdim=True), 1.0 + magnitude)


def _sharpness(images, magnitude):
    """Blend towards a 3x3 smoothed image; the one-pixel border stays as it is (as in PIL and torchvision)."""
    c = images.shape[1]
    kernel = torch.full((3, 3), 1.0 / 13.0, device=images.device)
    kernel[1, 1] = 5.0 / 13.0
    smooth = F.conv2d(images.float(), kernel.expand(c, 1, 3, 3), groups=c).round()  # (b, c, H - 2, W - 2)
    smooth = F.pad(smooth, (1, 1, 1, 1))
    inner = torch.zeros_like(images[:1, :1], dtype=torch.bool)
    inner[..., 1:-1, 1:-1] = True
    x = images.float()
    sharpened = torch.addcmul(x, smooth - x, _per_sample(1.0 - (1.0 + magnitude))).clamp(0, 255).to(images.dtype)
    return torch.where(inner, sharpened, images)


def _posterize(images, magnitude):
    bits = magnitude.long()
    mask = (256 - 2 ** (8 - bits)).to(torch.uint8)  # keep the top `bits` bits
    return images & mask[:, None, None, None]


def _solarize(images, magnitude):
    threshold = _per_sample(255.0 * magnitude)
    return torch.where(images.float() >= threshold, 255 - images, images)


def _autocontrast(images, magnitude):
    return TF.autocontrast(images)  # per image and channel already


def _equalize(images, magnitude):
    return TF.equalize(images)  # per image and channel already


@dataclass(frozen=True)
class Operation:
    """One operation of TrivialAugment and RandAugment: its name, what it does to the images that drew it
    (`fn(images, magnitudes)`, (B, C, H, W) uint8 and (B,) float64), whether its magnitude takes a random
    sign, and its magnitude at each of the `BINS` levels in a space (None: it has no magnitude)."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    signed: bool = False
    levels: Callable[[dict[str, float]], torch.Tensor] | None = None


# The operations, in torchvision's order: adding one is one line here.
AUTO_AUGMENT: tuple[Operation, ...] = (
    Operation("identity", lambda images, m: images),
    Operation("shear_x", lambda images, m: _shear(images, m, 0), True, _up_to("shear")),
    Operation("shear_y", lambda images, m: _shear(images, m, 1), True, _up_to("shear")),
    Operation("translate_x", lambda images, m: _translate(images, m, 0), True, _up_to("translate")),
    Operation("translate_y", lambda images, m: _translate(images, m, 1), True, _up_to("translate")),
    Operation("rotate", _rotate, True, _up_to("rotate")),
    Operation("brightness", _brightness, True, _up_to("enhance")),
    Operation("color", _color, True, _up_to("enhance")),
    Operation("contrast", _contrast, True, _up_to("enhance")),
    Operation("sharpness", _sharpness, True, _up_to("enhance")),
    Operation("posterize", _posterize, False, _posterize_levels),
    Operation("solarize", _solarize, False, lambda space: torch.linspace(1.0, 0.0, BINS).double()),
    Operation("autocontrast", _autocontrast),
    Operation("equalize", _equalize),
)
OPERATIONS: tuple[str, ...] = tuple(operation.name for operation in AUTO_AUGMENT)
SIGNED = frozenset(operation.name for operation in AUTO_AUGMENT if operation.signed)


def random_erasing(
    images: torch.Tensor,
    probability: float,
    generator: torch.Generator,
    area: tuple[float, float] = (0.02, 1 / 3),
    log_ratio: tuple[float, float] = (math.log(0.3), math.log(1 / 0.3)),
) -> torch.Tensor:
    """Random erasing (Zhong et al., 2020): with `probability`, set a random rectangle of each image to 0.

    Applied to normalised images, so 0 is the data set's mean colour. The rectangle covers a random
    fraction `area` of the image with a random aspect ratio, as torchvision's RandomErasing draws it,
    clipped to the image instead of retried. (B, C, H, W) float -> (B, C, H, W).
    """
    b, _, h, w = images.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, generator=generator, device=generator.device).to(images.device)

    erase = uniform(0.0, 1.0) < probability
    target, ratio = uniform(*area) * h * w, torch.exp(uniform(*log_ratio))
    eh = torch.sqrt(target * ratio).round().clamp(1, h).long()
    ew = torch.sqrt(target / ratio).round().clamp(1, w).long()
    top = (uniform(0.0, 1.0) * (h - eh + 1)).long()
    left = (uniform(0.0, 1.0) * (w - ew + 1)).long()
    ys = torch.arange(h, device=images.device)[None, :, None]
    xs = torch.arange(w, device=images.device)[None, None, :]
    inside = (ys >= top[:, None, None]) & (ys < (top + eh)[:, None, None])
    inside = inside & (xs >= left[:, None, None]) & (xs < (left + ew)[:, None, None])  # (b, H, W)
    return images.masked_fill((inside & erase[:, None, None])[:, None], 0.0)


def augment_batch(
    images: torch.Tensor,
    kind: str,
    generator: torch.Generator,
    *,
    randaugment_n: int = 2,
    randaugment_m: int = 9,
) -> torch.Tensor:
    """Apply the named augmentation (see `TrainConfig.augment`) to a (B, C, H, W) uint8 batch.

    "trivialaugment" and "randaugment" come after the flip and crop, as in the CIFAR recipes of their papers.
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; expected one of {', '.join(repr(k) for k in AUGMENTATIONS)}")
    if kind == "none":
        return images
    images = random_flip(random_crop(images, 4, generator), generator)
    if kind == "flip-crop-cutout":
        images = cutout(images, 12, generator)
    elif kind == "trivialaugment":
        images = trivial_augment(images, generator)
    elif kind == "randaugment":
        images = rand_augment(images, generator, randaugment_n, randaugment_m)
    return images


def mix_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    mixup: float,
    cutmix: float,
    generator: torch.Generator,
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


@dataclass(frozen=True)
class Pipeline:
    """Stored uint8 images -> what one training step sees, in this order: the uint8 augmentation (flip + crop,
    then cutout, TrivialAugment or RandAugment), normalisation, random erasing, then mixup or CutMix.

    `Pipeline.from_config(config)` builds it from a `TrainConfig`; `pipeline(images, labels, generator)` runs
    it on one batch. All draws come from `generator`, in a fixed order, so a seeded epoch repeats exactly.
    """

    augment: str = "none"
    randaugment_n: int = 2
    randaugment_m: int = 9
    random_erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    num_classes: int = 10

    @classmethod
    def from_config(cls, config: TrainConfig, num_classes: int = 10) -> Pipeline:
        return cls(
            augment=config.augment,
            randaugment_n=config.randaugment_n,
            randaugment_m=config.randaugment_m,
            random_erasing=config.random_erasing,
            mixup=config.mixup,
            cutmix=config.cutmix,
            num_classes=num_classes,
        )

    @property
    def mixes(self) -> bool:
        """True when the targets are soft labels (B, num_classes) instead of class indices (B,)."""
        return self.mixup > 0 or self.cutmix > 0

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) uint8 and (B,) labels -> normalised float images and targets, on `device`.

        The uint8 augmentation runs where `images` are (the generator's device); the rest on `device`.
        """
        from .data import normalise

        images = augment_batch(
            images,
            self.augment,
            generator,
            randaugment_n=self.randaugment_n,
            randaugment_m=self.randaugment_m,
        )
        device = device if device is not None else images.device
        images = normalise(images.to(device, non_blocking=True))
        labels = labels.to(device, non_blocking=True)
        if self.random_erasing > 0:
            images = random_erasing(images, self.random_erasing, generator)
        targets = labels
        if self.mixes:
            images, targets = mix_batch(
                images, labels, self.num_classes, mixup=self.mixup, cutmix=self.cutmix, generator=generator
            )
        return images, targets
