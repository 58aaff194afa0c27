"""Per-sample TrivialAugment / RandAugment against torchvision, random erasing, EMA and the compiled step."""

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from vit_tutorial import TrainConfig
from vit_tutorial.augment import (
    BINS,
    OPERATIONS,
    RAND_AUGMENT,
    SIGNED,
    TRIVIAL_AUGMENT_WIDE,
    apply_operations,
    augment_batch,
    magnitude_table,
    rand_augment,
    random_erasing,
    trivial_augment,
)
from vit_tutorial.config import RunOptions
from vit_tutorial.devices import autocast
from vit_tutorial.evaluate import loss_and_accuracy
from vit_tutorial.optim import EMA, make_optimizer
from vit_tutorial.registry import build_model
from vit_tutorial.train import TrainStep, fit

from .conftest import TINY, make_split

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


def test_ema_follows_its_formula():
    model = build_model(TINY)
    ema = EMA(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ema.model.state_dict()[name], 0.9 * before[name] + 0.1 * value)


def test_with_ema_validation_and_best_weights_are_the_averaged_ones(fake_data, quick_train_config, tmp_path):
    config = quick_train_config.replace(epochs=2, ema=0.5, augment="trivialaugment", random_erasing=0.25)
    model = build_model(TINY)
    validated = []

    def check(run, entry):  # what the epoch's validation measured is the averaged copy's loss, not the model's
        with autocast(run.device, run.precision):
            validated.append(
                [entry.val_loss == loss_and_accuracy(m, fake_data.val, run.device)[0] for m in (run.ema.model, model)]
            )

    result = fit(
        model, fake_data, config, out_dir=tmp_path, options=RunOptions(device="cpu", progress=False), on_epoch=check
    )
    assert validated == [[True, False], [True, False]]
    from vit_tutorial.checkpoint import load_checkpoint

    last = load_checkpoint(tmp_path / "last.pt")
    best = load_checkpoint(tmp_path / "best.pt")
    if result.best_epoch == 2:
        for name, value in best["model"].items():
            torch.testing.assert_close(value, last["ema"][name])
            assert not torch.equal(value, last["model"][name])
    resumed = fit(
        build_model(TINY),
        fake_data,
        config.replace(epochs=3),
        out_dir=tmp_path / "r",
        options=RunOptions(device="cpu", progress=False),
    )
    assert len(resumed.history) == 3


def test_a_compiled_step_changes_the_weights_as_an_eager_step_does(fake_data):
    config = TrainConfig(batch_size=20, lr=0.1, warmup_epochs=0, mixup=0.2)
    images, labels = torch.randn(20, 3, 32, 32), torch.arange(20) % 10
    targets = torch.nn.functional.one_hot(labels, 10).float() * 0.7 + 0.03
    results = []
    for compiled in (False, True):
        model = build_model(TINY, seed=0)
        forward = torch.compile(model) if compiled else model
        optimizer = make_optimizer(model, config)
        step = TrainStep(model, forward, optimizer, config, torch.device("cpu"), EMA(model, 0.9))
        model.train()
        for _ in range(2):
            step(images, targets, labels)
        results.append((model.state_dict(), step.ema.model.state_dict(), step.loss_sum.item()))
    (eager, eager_ema, eager_loss), (compiled, compiled_ema, compiled_loss) = results
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(compiled_ema[name], eager_ema[name], rtol=1e-4, atol=1e-5)
    assert not torch.equal(eager["head.weight"], build_model(TINY, seed=0).state_dict()["head.weight"])
