from pathlib import Path

import numpy as np
import pytest
import torch

from vit_tutorial import DataNotFoundError, VitTutorialError
from vit_tutorial.data import CIFAR10_MEAN, batches, data_root, denormalise, load_cifar10, normalise

from .conftest import make_split, write_image_folder


def test_image_folder_source_loads_splits_and_labels(image_folder):
    data = load_cifar10(image_folder, val_size=6, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 10)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 32, 32)
    assert data.test.labels.tolist() == list(range(10))
    # the generated images encode their class in the red channel
    red = data.test.images[:, 0, 0, 0].tolist()
    assert red == [label * 25 for label in range(10)]
    assert data.provenance["source"] == "image-folder" and data.provenance["root"] == str(image_folder)
    assert data.provenance["description"] == "CIFAR-10, image folder"


def test_image_folder_is_decoded_once_into_a_cache(image_folder, tmp_path):
    load_cifar10(image_folder, val_size=6)
    caches = sorted((tmp_path / "cache").glob("cifar10-imagefolder-*.npz"))
    assert [c.name.split("-")[3] for c in caches] == ["test", "train"]  # one cache per split
    with np.load(next(c for c in caches if "-train-" in c.name)) as stored:
        assert stored["images"].shape == (30, 32, 32, 3)
    load_cifar10(image_folder, val_size=6)
    assert sorted((tmp_path / "cache").glob("*.npz")) == caches  # the second load reads the cache
    (image_folder / "train" / "cat" / "0000.png").unlink()  # a changed listing is decoded anew
    data = load_cifar10(image_folder, val_size=6)
    assert len(data.train) + len(data.val) == 29
    now = sorted((tmp_path / "cache").glob("*.npz"))
    assert len(now) == 2 and now != caches  # the train cache was replaced, the stale one removed


def test_validation_split_is_seeded_and_disjoint(image_folder):
    a = load_cifar10(image_folder, val_size=6, seed=1)
    b = load_cifar10(image_folder, val_size=6, seed=1)
    c = load_cifar10(image_folder, val_size=6, seed=2)
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)

    def key(split):
        return {bytes(img.numpy().tobytes()) + bytes([lbl]) for img, lbl in zip(split.images, split.labels.tolist())}

    assert not key(a.val) & key(a.train)


def test_missing_data_gives_one_line_with_what_to_do(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        load_cifar10(tmp_path / "nowhere")
    message = str(error.value)
    assert "\n" not in message and "VIT_TUTORIAL_DATA" in message and "--download" in message


def test_image_folder_with_missing_class_or_wrong_size_is_rejected(image_folder):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(image_folder / "train" / "dog" / "big.png")
    with pytest.raises(VitTutorialError, match="expected a 32x32"):
        load_cifar10(image_folder)
    for png in (image_folder / "test" / "frog").iterdir():
        png.unlink()
    (image_folder / "test" / "frog").rmdir()
    with pytest.raises(DataNotFoundError, match="frog"):
        load_cifar10(image_folder)


def test_data_root_comes_from_argument_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VIT_TUTORIAL_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("VIT_TUTORIAL_DATA")
    monkeypatch.setenv("VIT_TUTORIAL_CACHE", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "data"


def test_normalize_and_denormalize_are_inverse():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    x = normalise(images)
    assert x.dtype == torch.float32
    torch.testing.assert_close(denormalise(x), images.float() / 255)
    flat = torch.full((1, 3, 1, 1), 0.0)
    flat[0, :, 0, 0] = torch.tensor(CIFAR10_MEAN)
    assert normalise(flat).abs().max() < 1e-6


def test_batches_cover_the_split_and_are_reproducible():
    split = make_split(25)
    plain = list(batches(split, 10))
    assert [b[0].shape[0] for b in plain] == [10, 10, 5]
    assert torch.equal(torch.cat([b[1] for b in plain]), split.labels)
    first = [y for _, y in batches(split, 10, shuffle=True, generator=torch.Generator().manual_seed(3), drop_last=True)]
    again = [y for _, y in batches(split, 10, shuffle=True, generator=torch.Generator().manual_seed(3), drop_last=True)]
    assert len(first) == 2 and all(torch.equal(a, b) for a, b in zip(first, again))
    with pytest.raises(ValueError, match="generator"):
        next(batches(split, 10, shuffle=True))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing array", "wrong shape"])
def test_a_damaged_decoded_cache_is_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("VIT_TUTORIAL_CACHE", str(tmp_path / "cache"))
    root = write_image_folder(tmp_path / "cifar", per_class=2)
    first = load_cifar10(root, val_size=2)
    (cache,) = (tmp_path / "cache").glob("*-train-*.npz")
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:300])
    elif damage == "garbage":
        cache.write_bytes(b"PK\x03\x04" + b"x" * 100)
    else:
        with np.load(cache) as stored:
            arrays = {k: stored[k] for k in stored.files}
        if damage == "missing array":
            del arrays["labels"]
        else:
            arrays["images"] = arrays["images"][:, :16]
        np.savez(cache, **arrays)
    again = load_cifar10(root, val_size=2)
    assert torch.equal(again.train.images, first.train.images) and torch.equal(again.test.labels, first.test.labels)
    with np.load(cache) as stored:  # and the cache is sound again
        assert stored["images"].shape == (20, 32, 32, 3)


def test_an_image_edited_in_place_is_read_again_and_changes_the_fingerprint(image_folder):
    import os
    import time

    from PIL import Image

    first = load_cifar10(image_folder, val_size=6)
    edited = image_folder / "test" / "cat" / "0000.png"
    stat = edited.stat()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(edited)  # same name, new pixels
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    time.sleep(0.01)
    again = load_cifar10(image_folder, val_size=6)
    cat = CLASSES_INDEX["cat"]
    assert again.test.images[cat, :, 0, 0].tolist() == [1, 2, 3]
    assert again.provenance["fingerprint"] != first.provenance["fingerprint"]
    assert again.provenance["test_fingerprint"] != first.provenance["test_fingerprint"]


CLASSES_INDEX = {name: i for i, name in enumerate(__import__("vit_tutorial").data.CLASSES)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda root: (root / "train" / "llama").mkdir(), r"holds \['llama'\], which are not CIFAR-10 classes"),
        (lambda root: (root / "train" / "cat" / "more").mkdir(), r"cat/more is a folder inside a class folder"),
        (
            lambda root: [p.unlink() for p in (root / "train" / "frog").iterdir()],
            r"frog holds no images",
        ),
    ],
)
def test_a_folder_that_would_give_wrong_data_is_refused(image_folder, change, message):
    from vit_tutorial.errors import DataError

    change(image_folder)
    with pytest.raises(DataError, match=message):
        load_cifar10(image_folder, val_size=6)


def test_file_names_and_roots_that_are_not_utf8_load_and_print(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("VIT_TUTORIAL_CACHE", str(tmp_path / "cache"))
    root = Path(os.fsdecode(bytes(tmp_path) + b"/donn\xe9es"))  # Latin-1 bytes, not UTF-8
    write_image_folder(root, per_class=2)
    odd = root / "train" / "cat" / os.fsdecode(b"ch\xe4t.png")
    (root / "train" / "cat" / "0000.png").rename(odd)
    data = load_cifar10(root, val_size=2)
    assert len(data.train) + len(data.val) == 20
    data.provenance["root"].encode("utf-8")  # storable and printable: no lone surrogates
    odd.write_bytes(b"not an image")
    with pytest.raises(VitTutorialError) as error:
        load_cifar10(root, val_size=2)
    str(error.value).encode("utf-8")


def test_evaluation_needs_only_the_test_folder(image_folder):
    import shutil

    shutil.rmtree(image_folder / "train")
    data = load_cifar10(image_folder, test_only=True)
    assert len(data.test) == 10 and len(data.train) == 0 and "test_fingerprint" in data.provenance


def test_subset_sizes_are_the_sizes_drawn_and_nonsense_is_refused(image_folder):
    data = load_cifar10(image_folder, val_size=6)
    small = data.subset(10, 5, 16)
    assert small.provenance["subset"]["test"] == 10  # only 10 test images exist
    with pytest.raises(ValueError, match="whole number of images >= 0"):
        data.train.subset(-1)
