"""Per-sample TrivialAugment / RandAugment against torchvision, random erasing, EMA and the compiled step."""

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from vit_tutorial.augment import (
    BINS,
    OPERATIONS,
    RAND_AUGMENT,
    SIGNED,
    TRIVIAL_AUGMENT_WIDE,
    apply_operations,
    augment_batch,
    cutout,
    magnitude_table,
    rand_augment,
    random_crop,
    random_erasing,
    random_flip,
    trivial_augment,
)

from .conftest import make_split

GEOMETRIC = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate"}
BLENDS = {"brightness", "color", "contrast", "sharpness"}  # float blends truncated to uint8: one level of rounding


def reference(image: torch.Tensor, name: str, m: float) -> torch.Tensor:
    """What torchvision's auto-augment transforms do to one image for operation `name` at magnitude `m`."""
    affine = {"angle": 0.0, "translate": [0, 0], "scale": 1.0, "shear": [0.0, 0.0]}
    if name == "identity":
        return image
    if name == "shear_x":
        return TF.affine(image, **{**affine, "shear": [math.degrees(math.atan(m)), 0.0]}, center=[0, 0])
    if name == "shear_y":
        return TF.affine(image, **{**affine, "shear": [0.0, math.degrees(math.atan(m))]}, center=[0, 0])
    if name == "translate_x":
        return TF.affine(image, **{**affine, "translate": [int(m), 0]})
    if name == "translate_y":
        return TF.affine(image, **{**affine, "translate": [0, int(m)]})
    if name == "rotate":
        return TF.rotate(image, angle=m)
    if name == "posterize":
        return TF.posterize(image, int(m))
    if name == "solarize":
        return TF.solarize(image, 255.0 * m)
    enhance = {
        "brightness": TF.adjust_brightness,
        "color": TF.adjust_saturation,
        "contrast": TF.adjust_contrast,
        "sharpness": TF.adjust_sharpness,
    }
    if name in enhance:
        return enhance[name](image, 1.0 + m)
    return {"autocontrast": TF.autocontrast, "equalize": TF.equalize}[name](image)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    split = make_split(12, seed=5)
    noise = torch.randint(0, 256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    return torch.cat([split.images, noise])


@pytest.mark.parametrize("space", [TRIVIAL_AUGMENT_WIDE, RAND_AUGMENT], ids=["trivialaugment", "randaugment"])
@pytest.mark.parametrize("name", OPERATIONS)
def test_each_operation_matches_torchvision_on_single_images(images, space, name):
    table = magnitude_table(space)
    op = OPERATIONS.index(name)
    for level in (0, 1, 9, 15, 20, 30):
        for sign in (1, -1) if name in SIGNED else (1,):
            m = table[op, level].item() * sign
            ours = apply_operations(
                images, torch.full((len(images),), op), torch.full((len(images),), m, dtype=torch.float64)
            )
            expected = torch.stack([reference(image, name, m) for image in images])
            difference = (ours.int() - expected.int()).abs().max().item()
            assert difference <= (1 if name in BLENDS else 0), f"{name} at level {level}, sign {sign}: {difference}"


def test_magnitude_tables_are_torchvisions():
    from torchvision.transforms.v2 import RandAugment, TrivialAugmentWide

    for space, transform in ((TRIVIAL_AUGMENT_WIDE, TrivialAugmentWide), (RAND_AUGMENT, RandAugment)):
        ours = magnitude_table(space)
        names = {
            "ShearX": "shear_x",
            "ShearY": "shear_y",
            "TranslateX": "translate_x",
            "TranslateY": "translate_y",
            "Rotate": "rotate",
            "Brightness": "brightness",
            "Color": "color",
            "Contrast": "contrast",
            "Sharpness": "sharpness",
            "Posterize": "posterize",
            "Solarize": "solarize",
        }
        for theirs, (make, signed) in transform._AUGMENTATION_SPACE.items():
            values = make(BINS, 32, 32)
            if values is None:
                continue
            assert torch.equal(ours[OPERATIONS.index(names[theirs])], values.double()), theirs
            assert signed == (names[theirs] in SIGNED)


@pytest.mark.parametrize("kind", ["trivialaugment", "randaugment"])
def test_every_image_draws_its_own_operation_and_the_draw_is_seeded(images, kind):
    batch = images.repeat(8, 1, 1, 1)  # 128 images, 16 distinct
    first = augment_batch(batch, kind, torch.Generator().manual_seed(3))
    again = augment_batch(batch, kind, torch.Generator().manual_seed(3))
    other = augment_batch(batch, kind, torch.Generator().manual_seed(4))
    assert first.dtype == torch.uint8 and first.shape == batch.shape
    assert torch.equal(first, again) and not torch.equal(first, other)
    copies = first.view(8, 16, 3, 32, 32)
    assert sum(not torch.equal(copies[0, i], copies[j, i]) for i in range(16) for j in range(1, 8)) > 100


def test_trivial_augment_uses_every_operation():
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(len(OPERATIONS))
    calls = []
    import vit_tutorial.augment as augment

    original = augment.apply_operations
    augment.apply_operations = lambda images, op, magnitude: calls.append(op) or original(images, op, magnitude)
    try:
        trivial_augment(make_split(700).images, generator)
        rand_augment(make_split(10).images, generator, n=3, m=5)
    finally:
        augment.apply_operations = original
    counts = torch.bincount(calls[0], minlength=len(OPERATIONS))
    assert (counts > 20).all(), counts  # 700 draws over 14 operations: 50 each on average
    assert len(calls) == 4  # one round for TrivialAugment, n rounds for RandAugment


def test_random_erasing_erases_one_rectangle_with_the_given_probability():
    images = torch.ones(400, 3, 32, 32)
    erased = random_erasing(images, 0.5, torch.Generator().manual_seed(0))
    zero = erased[:, 0] == 0  # (b, h, w)
    hit = zero.flatten(1).any(1)
    assert 150 < hit.sum() < 250
    area = zero.flatten(1).float().mean(1)[hit]
    assert area.min() > 0.005 and area.max() <= 0.5
    for mask in zero[hit][:20]:  # a rectangle: its bounding box is all erased
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    assert torch.equal(random_erasing(images, 0.0, torch.Generator()), images)


def test_random_crop_shifts_content_within_padding():
    images = torch.zeros(64, 1, 32, 32, dtype=torch.uint8)
    images[:, :, 16, 16] = 255
    cropped = random_crop(images, 4, torch.Generator().manual_seed(0))
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    rows, cols = torch.nonzero(cropped[:, 0] == 255)[:, 1], torch.nonzero(cropped[:, 0] == 255)[:, 2]
    assert rows.min() >= 12 and rows.max() <= 20 and cols.min() >= 12 and cols.max() <= 20
    assert len(set(rows.tolist())) > 1  # not always the identity


def test_flip_mirrors_about_half_the_images():
    images = torch.arange(32, dtype=torch.uint8).repeat(200, 3, 32, 1)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    mirrored = (flipped[:, 0, 0, 0] == 31).sum().item()
    assert 60 < mirrored < 140
    assert torch.equal(flipped[flipped[:, 0, 0, 0] == 31], images.flip(-1)[flipped[:, 0, 0, 0] == 31])


def test_cutout_zeroes_one_square_and_augment_names_are_checked():
    images = torch.full((8, 3, 32, 32), 200, dtype=torch.uint8)
    out = cutout(images, 12, torch.Generator().manual_seed(0))
    zeroed = (out[:, 0] == 0).sum(dim=(1, 2))
    assert torch.all(zeroed > 0) and torch.all(zeroed <= 13 * 13)
    assert torch.equal(augment_batch(images, "none", torch.Generator()), images)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_batch(images, "mixup", torch.Generator())


def test_mixup_and_cutmix_give_soft_targets_that_match_the_mixed_pixels():
    from vit_tutorial.augment import mix_batch

    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 8, 8).contiguous()
    labels = torch.arange(4)
    mixed, targets = mix_batch(images, labels, 4, mixup=1.0, cutmix=0.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    # each mixed image is a blend of two constant images: its value is the targets' expected label
    torch.testing.assert_close(mixed[:, 0, 0, 0], targets @ torch.arange(4.0))
    mixed, targets = mix_batch(images, labels, 4, mixup=0.0, cutmix=1.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mixed.mean(dim=(1, 2, 3)), targets @ torch.arange(4.0))  # pasted area = label weight
