"""The deletion test of attention maps, on a model whose decision depends on one known patch."""

import pytest
import torch
from torch import nn

from vit_tutorial import ViT
from vit_tutorial.config import ViTConfig
from vit_tutorial.data import normalise
from vit_tutorial.faithfulness import (
    area,
    deletion_curve,
    occlusion_ranking,
    random_ranking,
    ranking,
    true_class_probability,
)
from vit_tutorial.patches import patchify

from .conftest import TINY, make_split

KEY = 6  # the one patch the model below looks at


class OnePatch(nn.Module):
    """Says class 1 when patch KEY is bright and shown, class 0 otherwise; blind to every other patch."""

    config = ViTConfig()

    def forward(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        patches = patchify(images, self.config.patch_size)  # (b, 16, 192)
        shown = (
            torch.ones(patches.shape[:2], dtype=torch.bool)
            if keep is None
            else (torch.zeros(patches.shape[:2], dtype=torch.bool).scatter(1, keep, True))
        )
        brightness = (patches[:, KEY].mean(-1) * shown[:, KEY]).clamp(min=0)
        return torch.stack([torch.full_like(brightness, 5.0), 20 * brightness], dim=1)


@pytest.fixture
def bright_key():
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    row, col = divmod(KEY, 4)
    images[:, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] = 255
    return images, torch.ones(4, dtype=torch.long)


@pytest.mark.parametrize("hide", ["drop", "mean"])
def test_occlusion_ranks_the_one_patch_the_decision_depends_on_first(bright_key, hide):
    images, labels = bright_key
    order = occlusion_ranking(OnePatch(), images, labels, hide)
    assert (order[:, 0] == KEY).all()


def test_a_map_that_points_at_the_patch_is_faithful_and_its_reverse_is_not(bright_key):
    images, labels = bright_key
    model = OnePatch()
    pointing = torch.zeros(4, 4, 4)
    pointing.view(4, 16)[:, KEY] = 1.0
    top, reverse = ranking(pointing), ranking(-pointing)
    assert (top[:, 0] == KEY).all() and (reverse[:, -1] == KEY).all()
    fast, slow = deletion_curve(model, images, labels, top), deletion_curve(model, images, labels, reverse)
    assert fast.shape == (4, 17) and torch.allclose(fast[:, 0], slow[:, 0])  # step 0: nothing hidden
    assert (fast[:, 1] < 0.01).all() and (slow[:, 15] > 0.99).all() and (slow[:, 16] < 0.01).all()
    assert area(fast) < 0.1 < 0.9 < area(slow)
    controls = deletion_curve(model, images, labels, random_ranking(4, 16))
    assert area(fast) < area(controls) < area(slow)


def test_dropping_tokens_leaves_the_shown_ones_as_they_were():
    """With every patch kept, in any order, the ViT computes what it computes for the whole image: each kept
    token carries its own position embedding, and attention does not care about the order."""
    model = ViT(TINY).eval()
    images = normalise(make_split(3).images)
    everything = torch.randperm(16).expand(3, -1)
    with torch.no_grad():
        torch.testing.assert_close(model(images, keep=everything), model(images), atol=1e-5, rtol=1e-5)
        shown = model(images, keep=torch.tensor([[0, 5, 9]] * 3), return_attention=True)[1]
    assert shown.shape == (3, TINY.depth, TINY.heads, 4, 4)  # CLS and the three patches shown
    probabilities = true_class_probability(model, make_split(3).images, torch.arange(3), torch.zeros(3, 0).long())
    assert probabilities.shape == (3,) and ((probabilities > 0) & (probabilities < 1)).all()
