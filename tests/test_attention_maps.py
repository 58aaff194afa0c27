import pytest
import torch

from vit_tutorial import ViT
from vit_tutorial.attention_maps import attention_overlay, attention_rollout, cls_attention, overlay_steps

from .conftest import TINY


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


def identity_attention(depth: int = 1, heads: int = 1, tokens: int = 5) -> torch.Tensor:
    """(1, depth, heads, T, T): every token attends only to itself."""
    return torch.eye(tokens).repeat(1, depth, heads, 1, 1)


def test_cls_attention_averages_the_heads_cls_row_over_the_patch_grid():
    attentions = identity_attention(depth=2, heads=2)
    attentions[0, 1, 0, 0] = torch.tensor([0.2, 0.1, 0.3, 0.2, 0.2])
    attentions[0, 1, 1, 0] = torch.tensor([0.0, 0.4, 0.2, 0.2, 0.2])
    close(cls_attention(attentions), [[[0.25, 0.25], [0.2, 0.2]]])
    close(cls_attention(attentions, layer=1, head=1)[0], [[0.4, 0.2], [0.2, 0.2]])
    assert cls_attention(attentions, layer=0).tolist() == [[[0.0, 0.0], [0.0, 0.0]]]
    assert cls_attention(attentions[0]).shape == (2, 2)  # one image without a batch axis


def test_cls_attention_of_the_real_model_is_a_4x4_grid():
    _, attentions = ViT(TINY).eval()(torch.randn(3, 3, 32, 32), return_attention=True)
    grid = cls_attention(attentions)
    assert grid.shape == (3, 4, 4)
    torch.testing.assert_close(grid.sum(dim=(1, 2)), 1 - attentions[:, -1, :, 0, 0].mean(1))


def test_rollout_of_uniform_attention_by_hand():
    uniform = torch.full((1, 2, 1, 5, 5), 0.2)
    # one layer: (U + I) / 2 has CLS row [0.6, 0.1, 0.1, 0.1, 0.1]
    close(attention_rollout(uniform[:, :1]), [[[0.1, 0.1], [0.1, 0.1]]])
    # two layers: row 0 of that matrix squared is [0.4, 0.15, 0.15, 0.15, 0.15]
    close(attention_rollout(uniform), [[[0.15, 0.15], [0.15, 0.15]]])


def test_rollout_multiplies_layers_from_first_to_last():
    attentions = identity_attention(depth=2)
    attentions[0, 0, 0, 2] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])  # layer 1: token 2 reads token 1
    attentions[0, 1, 0, 0] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])  # layer 2: CLS reads token 2
    # (L2 @ L1)[0] = 0.5 e0 + 0.25 e1 + 0.25 e2: patch 0 reaches CLS through patch 1
    close(attention_rollout(attentions)[0], [[0.25, 0.25], [0.0, 0.0]])


def test_rollout_head_fusions_by_hand():
    attentions = identity_attention(heads=2)
    attentions[0, 0, 0, 0] = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0])
    attentions[0, 0, 1, 0] = torch.tensor([0.5, 0.0, 0.5, 0.0, 0.0])
    close(attention_rollout(attentions, "mean")[0], [[0.125, 0.125], [0, 0]])
    close(attention_rollout(attentions, "max")[0], [[0.2, 0.2], [0, 0]])
    close(attention_rollout(attentions, "min")[0], [[0, 0], [0, 0]])


def test_rollout_discards_the_weakest_weights_but_never_cls_to_cls():
    attentions = identity_attention()
    attentions[0, 0, 0, 0] = torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0])
    close(attention_rollout(attentions)[0], [[0.15, 0.1], [0.05, 0.0]])
    # 25 weights, drop 18: left are the four ones on the diagonal and 0.4, 0.3, 0.2
    close(attention_rollout(attentions, discard_ratio=0.72)[0], [[0.3 / 1.9, 0.2 / 1.9], [0, 0]])


def test_overlay_follows_the_classic_steps():
    image = torch.full((3, 4, 4), 0.5)
    grid = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    steps = overlay_steps(image, grid, amplify=4.0)
    ramp = torch.tensor([0.0, 0.25, 0.75, 1.0])  # bilinear, align_corners=False, 2 -> 4
    torch.testing.assert_close(steps["resized"], 2 * ramp[:, None] + ramp[None, :])
    torch.testing.assert_close(steps["normalised"], steps["resized"] / 3)
    torch.testing.assert_close(steps["product"], 0.5 * steps["normalised"].expand(3, 4, 4))
    torch.testing.assert_close(steps["amplified"], 4 * steps["product"])
    torch.testing.assert_close(attention_overlay(image, grid, 4.0), steps["amplified"].clamp(0, 1))
    assert (
        attention_overlay(image, torch.ones(2, 2)).tolist() == torch.ones(3, 4, 4).tolist()
    )  # flat map: all ones x 0.5 x 2


def test_batched_overlay_normalises_each_image_on_its_own():
    images = torch.rand(2, 3, 8, 8)
    grids = torch.stack([torch.rand(2, 2), 100 * torch.rand(2, 2)])
    out = overlay_steps(images, grids)
    assert out["overlay"].shape == (2, 3, 8, 8)
    assert torch.allclose(out["normalised"].amax(dim=(1, 2)), torch.ones(2))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: cls_attention(torch.rand(2, 3, 17)), "expected attentions shaped"),
        (lambda: cls_attention(torch.rand(1, 2, 2, 6, 6)), "square number of patches"),
        (lambda: cls_attention(torch.rand(1, 2, 2, 5, 5), layer=2), "layer must be"),
        (lambda: cls_attention(torch.rand(1, 2, 2, 5, 5), head=2), "head must be"),
        (lambda: attention_rollout(torch.rand(1, 2, 2, 5, 5), "median"), "head_fusion"),
        (lambda: attention_overlay(torch.rand(3, 8, 8), torch.rand(2, 2, 2)), "expected a grid shaped"),
        (lambda: attention_overlay(torch.rand(2, 3, 8, 8), torch.rand(3, 2, 2)), "expected a grid shaped"),
        (lambda: attention_overlay(torch.rand(3, 8, 8) * 255, torch.rand(2, 2)), r"in \[0, 1\]"),
        (lambda: attention_overlay(torch.rand(1, 8, 8), torch.rand(2, 2)), r"\(3, H, W\)"),
    ],
)
def test_bad_input_gives_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_cls_spread_measures_how_uneven_the_cls_row_is():
    from vit_tutorial.attention_maps import cls_spread

    even = torch.full((2, 3, 4, 17, 17), 1 / 17)
    assert torch.allclose(cls_spread(even), torch.zeros(3))
    peaked = even.clone()
    peaked[:, 1, :, 0, 1:] = 0.0
    peaked[:, 1, :, 0, 5] = 1.0  # layer 2: all CLS attention on one patch
    spread = cls_spread(peaked)
    assert spread[1] == pytest.approx(1.0) and spread[0] == 0 and spread[2] == 0
    assert torch.allclose(cls_spread(peaked[0]), spread)


@pytest.mark.parametrize(("layer", "head"), [(0.5, None), (True, None), (0, 1.0), (0, -1)])
def test_indices_that_are_not_whole_numbers_in_range_are_refused(layer, head):
    with pytest.raises(ValueError, match=r"must be .*a whole number"):
        cls_attention(torch.rand(1, 2, 2, 5, 5), layer=layer, head=head)


def test_a_flat_map_is_below_the_threshold_and_the_shared_scale_keeps_it_flat():
    from vit_tutorial.attention_maps import flat_threshold, map_spread, overlay_steps, shared_scale

    even = torch.full((1, 2, 4, 17, 17), 1 / 17)
    sharp = even.clone()
    sharp[0, 1, :, 0, 1:] = torch.linspace(0.0, 0.1, 16)
    grids = cls_attention(sharp, 0), cls_attention(sharp, 1)
    assert map_spread(grids[0]) < flat_threshold(17) < map_spread(grids[1])
    image = torch.rand(3, 32, 32)
    top = shared_scale(sharp[0])
    minmax = overlay_steps(image, grids[0][0])["normalised"]
    shared = overlay_steps(image, grids[0][0], scale=top)["normalised"]
    assert minmax.min() == 1 and shared.std() < 1e-6 and shared.max() < 1  # min-max: all ones; shared: one level
