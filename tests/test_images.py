"""Reading image files: every way an image can be unreadable, and modes a plain conversion gets wrong."""

import numpy as np
import pytest
import torch
from PIL import Image

from vit_tutorial import ImageError
from vit_tutorial.data import load_cifar10
from vit_tutorial.predict import load_image

from .conftest import write_image_folder


@pytest.fixture
def bomb(tmp_path, monkeypatch):
    """A PNG over twice Pillow's pixel limit (the limit is lowered here, so the file stays small)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    return path


def test_a_decompression_bomb_is_refused_in_prediction_and_in_a_training_folder(bomb, tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="too large to open safely"):
        load_image(bomb)
    root = write_image_folder(tmp_path / "cifar", per_class=2)
    (root / "train" / "cat" / "0000.png").write_bytes(bomb.read_bytes())
    monkeypatch.setenv("VIT_TUTORIAL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ImageError, match=r"cat/0000.png is too large .*remove or replace this file"):
        load_cifar10(root, val_size=2)


def test_a_16_bit_greyscale_png_keeps_its_brightness(tmp_path):
    values = np.full((40, 40), 32768, dtype=np.uint16)  # half of full scale
    Image.fromarray(values).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    image = load_image(tmp_path / "grey16.png")
    assert torch.allclose(image, torch.full_like(image, 128 / 255), atol=1 / 255)


def test_what_is_not_an_image_file_is_named_in_prediction_and_in_a_training_folder(tmp_path, monkeypatch):
    import os

    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "folder.png").mkdir()
    (odd / "dangling.png").symlink_to(odd / "nowhere.png")
    (odd / "loop.png").symlink_to(odd / "loop.png")
    os.mkfifo(odd / "pipe.png")
    expected = {
        "folder.png": "is a folder",
        "dangling.png": "is a broken symbolic link",
        "loop.png": "is a broken symbolic link",
        "pipe.png": "is not a regular file",
    }
    for name, problem in expected.items():
        with pytest.raises(ImageError, match=problem):
            load_image(odd / name)
    monkeypatch.setenv("VIT_TUTORIAL_CACHE", str(tmp_path / "cache"))
    for name, problem in expected.items():
        root = write_image_folder(tmp_path / f"cifar-{name}", per_class=2)
        target = root / "train" / "cat" / name
        if name == "folder.png":
            target.mkdir()
        elif name == "pipe.png":
            os.mkfifo(target)
        else:
            target.symlink_to(target if name == "loop.png" else root / "nowhere.png")
        with pytest.raises(ImageError, match=rf"cat/{name} {problem}.*remove or replace this file"):
            load_cifar10(root, val_size=2)


def test_a_photo_is_turned_upright_as_its_exif_says(tmp_path):
    picture = Image.new("RGB", (64, 32), (255, 0, 0))
    picture.paste((0, 0, 255), (0, 0, 32, 32))  # blue left half, red right half, stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    picture.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "phone.jpg")  # upright: blue on top, red below
    assert image[2, 2, 16] > 0.8 and image[0, 29, 16] > 0.8


@pytest.mark.parametrize(("value", "grey"), [(2**31 - 1, 255), (2**30, 128), (70_000, 0)])
def test_a_32_bit_greyscale_image_is_scaled_by_its_signed_range(tmp_path, value, grey):
    """Pillow's "I" is signed 32-bit: its largest value is white, half of it mid-grey."""
    values = np.full((40, 40), value, dtype=np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "grey32.tif")
    image = load_image(tmp_path / "grey32.tif")
    assert torch.allclose(image, torch.full_like(image, grey / 255), atol=1 / 255)
