"""The public functions a chapter calls refuse arguments that make no sense with the package's own ValueError or
TypeError naming the parameter, instead of failing deep inside Python or torch, or returning nonsense."""

import math

import pytest
import torch

from vit_tutorial import TrainConfig, ViT
from vit_tutorial.attention_maps import attend, attention_overlay, attention_rollout
from vit_tutorial.data import CIFAR10, Split, load_cifar10
from vit_tutorial.explorer import select_examples, static_explorer_html
from vit_tutorial.patches import patchify, unpatchify
from vit_tutorial.viz import class_samples, image_grid

from .conftest import TINY, make_split, train_tiny

IMAGES = torch.zeros(2, 3, 32, 32)


@pytest.mark.parametrize(
    ("call", "error", "names"),
    [
        (lambda: patchify(IMAGES, 0), ValueError, "patch_size"),
        (lambda: patchify(IMAGES, 2.5), TypeError, "patch_size"),
        (lambda: unpatchify(torch.zeros(2, 16, 192), -8), ValueError, "patch_size"),
        (lambda: unpatchify(torch.zeros(2, 16, 192), 8, channels=0), ValueError, "channels"),
        (lambda: attend(ViT(TINY), IMAGES, batch_size=0), ValueError, "batch_size"),
        (lambda: image_grid(IMAGES, ncols=0), ValueError, "ncols"),
        (lambda: image_grid(IMAGES, size=math.nan), ValueError, "size"),
        (lambda: class_samples(make_split(20), per_class=-1), ValueError, "per_class"),
        (lambda: select_examples(torch.arange(10), per_class=-1), ValueError, "per_class"),
        (lambda: select_examples(torch.arange(10), per_class=True), TypeError, "per_class"),
        (lambda: static_explorer_html(ViT(TINY), make_split(20), indices=[10**6]), ValueError, "index"),
        (lambda: static_explorer_html(ViT(TINY), make_split(20), indices=[-1]), ValueError, "index"),
        (lambda: attention_overlay(torch.zeros(3, 32, 32), torch.rand(4, 4), math.nan), ValueError, "amplify"),
        (lambda: attention_overlay(torch.zeros(3, 32, 32), torch.rand(4, 4), -1.0), ValueError, "amplify"),
        (lambda: attention_rollout(torch.rand(2, 2, 17, 17), discard_ratio=1.5), ValueError, "discard_ratio"),
        (lambda: Split(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0.0, 1.0])), TypeError, "labels"),
        (lambda: Split(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 10])), ValueError, "labels"),
        (lambda: Split(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([-1, 3])), ValueError, "labels"),
        (lambda: load_cifar10(val_size=True), TypeError, "val_size"),
        (lambda: load_cifar10(val_size=-5), ValueError, "val_size"),
        (lambda: load_cifar10(val_size=50_000), ValueError, "val_size"),
    ],
)
def test_nonsense_arguments_are_refused_by_name(call, error, names):
    with pytest.raises(error, match=names):
        call()


def test_training_on_no_images_is_refused_before_it_starts():
    empty = Split(torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    data = CIFAR10(make_split(20), empty, make_split(20), {"source": "generated"})
    with pytest.raises(ValueError, match="no validation images"):
        train_tiny(data, TrainConfig(epochs=1, batch_size=10))
    data = CIFAR10(empty, make_split(20), make_split(20), {"source": "generated"})
    with pytest.raises(ValueError, match="no training images"):
        train_tiny(data, TrainConfig(epochs=1, batch_size=10))
