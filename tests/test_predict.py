import pytest
import torch
from PIL import Image

from vit_tutorial import ImageError, ViT
from vit_tutorial.data import CLASSES
from vit_tutorial.predict import load_image, top_k

from .conftest import TINY


@pytest.mark.parametrize("mode, size", [("L", (32, 32)), ("RGBA", (50, 20)), ("RGB", (1200, 900)), ("P", (64, 64))])
def test_any_image_becomes_a_32x32_rgb_tensor(tmp_path, mode, size):
    path = tmp_path / "image.png"
    Image.new(mode, size, 128 if mode in ("L", "P") else (10, 200, 30, 255)[: len(mode)]).save(path)
    image = load_image(path)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert torch.allclose(load_image(tmp_path / "clear.png"), torch.ones(3, 32, 32))


def test_wide_image_keeps_its_centre(tmp_path):
    image = Image.new("RGB", (96, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    image.save(tmp_path / "wide.png")
    assert torch.allclose(load_image(tmp_path / "wide.png")[2], torch.ones(32, 32), atol=0.02)


def test_non_images_give_one_clear_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(tmp_path / "notes.txt")
    with pytest.raises(ImageError, match="no image file"):
        load_image(tmp_path / "missing.jpg")


def test_top_k_is_sorted_and_sums_below_one():
    ranked = top_k(ViT(TINY), torch.rand(3, 32, 32), k=3)
    assert len(ranked) == 3 and all(name in CLASSES for name, _ in ranked)
    probabilities = [p for _, p in ranked]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="top-k"):
        top_k(ViT(TINY), torch.rand(3, 32, 32), k=11)
