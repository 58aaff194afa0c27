import pytest
import torch
import torch.nn.functional as F

from vit_tutorial import ViT, ViTConfig, count_parameters
from vit_tutorial.model import Attention, Block, PatchEmbedding

from .conftest import TINY


def test_default_model_has_the_pinned_parameter_count():
    assert count_parameters(ViT()) == 2_407_818


def test_shapes_at_every_stage():
    config = ViTConfig()
    model = ViT(config).eval()
    images = torch.randn(3, 3, 32, 32)
    tokens = model.patch_embed(images)
    assert tokens.shape == (3, 16, 128)
    out, weights = model.blocks[0].attn(torch.randn(3, 17, 128), return_attention=True)
    assert out.shape == (3, 17, 128) and weights.shape == (3, 4, 17, 17)
    features, attentions = model.forward_features(images, return_attention=True)
    assert features.shape == (3, 17, 128)
    assert attentions.shape == (3, 12, 4, 17, 17)
    assert model.forward_head(features).shape == (3, 10)
    assert model(images).shape == (3, 10)


def test_attention_rows_are_probability_distributions():
    _, attentions = ViT(ViTConfig(depth=3)).eval()(torch.randn(2, 3, 32, 32), return_attention=True)
    assert torch.all(attentions >= 0)
    torch.testing.assert_close(attentions.sum(-1), torch.ones(2, 3, 4, 17))


def test_fused_and_explicit_attention_give_the_same_logits():
    torch.manual_seed(0)
    model = ViT().eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        fused = model(images)
        explicit, attentions = model(images, return_attention=True)
    torch.testing.assert_close(fused, explicit, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(attentions).all()


def test_explicit_attention_matches_torch_reference():
    torch.manual_seed(0)
    attention = Attention(ViTConfig(dim=32, heads=4)).eval()
    x = torch.randn(2, 5, 32)
    out, weights = attention(x, return_attention=True)
    q, k, v = attention.qkv(x).reshape(2, 5, 3, 4, 8).permute(2, 0, 3, 1, 4)
    reference = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 5, 32)
    torch.testing.assert_close(out, attention.proj(reference), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, (q @ k.transpose(-2, -1) / 8**0.5).softmax(-1))


def test_patch_embedding_is_a_strided_convolution():
    config = ViTConfig()
    embed = PatchEmbedding(config)
    conv = torch.nn.Conv2d(3, 128, kernel_size=8, stride=8)
    with torch.no_grad():
        conv.weight.copy_(embed.proj.weight.reshape(128, 8, 8, 3).permute(0, 3, 1, 2))
        conv.bias.copy_(embed.proj.bias)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(embed(images), conv(images).flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-5)


def test_wrong_input_shape_names_expected_and_received():
    with pytest.raises(ValueError, match=r"expects images shaped \(B, 3, 32, 32\), got \(2, 3, 28, 28\)"):
        ViT()(torch.randn(2, 3, 28, 28))


def test_stochastic_depth_is_off_in_eval_and_random_in_training():
    block = Block(ViTConfig(dim=16, heads=2, mlp_dim=32), drop_path=0.5)
    x = torch.randn(64, 5, 16)
    block.eval()
    torch.testing.assert_close(block(x)[0], block(x)[0])
    block.train()
    torch.manual_seed(0)
    assert not torch.allclose(block(x)[0], block(x)[0])


def test_no_nans_for_large_inputs():
    assert torch.isfinite(ViT().eval()(torch.randn(2, 3, 32, 32) * 100)).all()


def test_loading_the_small_vit_does_not_import_the_vit_b_16_code():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vit_tutorial.pretrained import load_pretrained, pretrained_available\n"
        "model = load_pretrained() if pretrained_available() else None\n"
        "print('vit_tutorial.finetune' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "False", result.stderr


def test_images_of_the_wrong_type_are_explained():
    model = ViT(TINY)
    with pytest.raises(ValueError, match=r"normalised float images, got torch.uint8; .*normalise"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"got float64; use images.float\(\)"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.float64))
