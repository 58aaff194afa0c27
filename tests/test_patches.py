import pytest
import torch

from vit_tutorial.patches import patchify, unpatchify


def test_patchify_equals_a_manual_reshape():
    images = torch.randn(2, 3, 32, 32)
    manual = images.reshape(2, 3, 4, 8, 4, 8).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 192)
    assert torch.equal(patchify(images, 8), manual)


def test_patch_k_is_the_kth_block_in_reading_order():
    images = torch.randn(1, 3, 32, 32)
    patches = patchify(images, 8)
    row, col = divmod(6, 4)
    block = images[0, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8]  # (c, p1, p2)
    assert torch.equal(patches[0, 6], block.permute(1, 2, 0).reshape(-1))


@pytest.mark.parametrize("patch_size, tokens", [(4, 64), (8, 16), (16, 4)])
def test_unpatchify_inverts_patchify(patch_size, tokens):
    images = torch.randn(2, 3, 32, 32)
    patches = patchify(images, patch_size)
    assert patches.shape == (2, tokens, patch_size * patch_size * 3)
    assert torch.equal(unpatchify(patches, patch_size), images)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.randn(1, 3, 30, 30), 8)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        patchify(torch.randn(3, 32, 32), 8)
    with pytest.raises(ValueError, match="square number"):
        unpatchify(torch.randn(1, 15, 192), 8)
