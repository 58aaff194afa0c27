"""Fine-tuning ViT-B/16: the real model with random weights on a few images (the ImageNet weights need a network)."""

import urllib.error

import pytest
import torch

from vit_tutorial import TrainConfig
from vit_tutorial.attention_maps import attend, attention_overlay, cls_attention
from vit_tutorial.checkpoint import load_model
from vit_tutorial.config import FineTuneConfig, RunOptions
from vit_tutorial.errors import WeightsUnavailableError
from vit_tutorial.finetune import FineTunedViT, load_imagenet_weights, weights_file
from vit_tutorial.optim import make_optimizer
from vit_tutorial.train import fit


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = FineTunedViT(FineTuneConfig(trainable_blocks=1))
    torch.nn.init.normal_(model.backbone.heads.head.weight, std=0.05)  # a zero head would hide differences in logits
    return model


def test_upsamples_cifar_batches_to_224_with_imagenet_statistics(model):
    images = torch.zeros(2, 3, 32, 32)  # the CIFAR mean after normalisation
    prepared = model.prepare(images)
    assert prepared.shape == (2, 3, 224, 224)
    expected = (torch.tensor([0.4914, 0.4822, 0.4465]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225]
    )
    assert torch.allclose(prepared[0, :, 100, 100], expected, atol=1e-4)


def test_freezing_leaves_only_the_last_blocks_trainable(model):
    kept = ("backbone.encoder.layers.encoder_layer_11.", "backbone.encoder.ln.", "backbone.heads.")
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith(kept), name
    optimizer = make_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-4, weight_decay=0.05))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == 7_097_098
    everything = FineTunedViT(FineTuneConfig(trainable_blocks=12))
    assert all(p.requires_grad for p in everything.parameters())


def test_flop_count_sees_the_attention_products():
    from vit_tutorial.evaluate import count_flops

    frozen = FineTunedViT(FineTuneConfig(trainable_blocks=0))
    t, d, m, layers = 197, 768, 3072, 12
    per_block = t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * m  # multiply-adds
    macs = 196 * (16 * 16 * 3) * d + layers * per_block + d * 10
    assert count_flops(frozen) == 2 * macs


def test_attention_comes_from_the_real_forward_pass_as_a_14x14_grid(model):
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        plain = model(images)
    logits, attentions = attend(model, images, normalised=True)
    assert torch.allclose(logits, plain, atol=1e-5)
    assert attentions.shape == (2, 12, 12, 197, 197)
    assert torch.allclose(attentions.sum(-1), torch.ones(2, 12, 12, 197), atol=1e-4)
    grid = cls_attention(attentions)
    assert grid.shape == (2, 14, 14)
    overlay = attention_overlay(torch.rand(2, 3, 224, 224), grid)
    assert overlay.shape == (2, 3, 224, 224)
    assert not model.backbone.encoder.layers[0].self_attention._forward_hooks  # hooks removed afterwards


def test_fine_tunes_with_the_shared_trainer_and_reloads(model, fake_data, tmp_path):
    data = fake_data.subset(8, 4, 4)
    config = TrainConfig(
        epochs=1, batch_size=4, lr=1e-3, optimizer="adamw", weight_decay=0.05, warmup_epochs=0, val_size=4
    )
    head_before = model.backbone.heads.head.weight.clone()
    frozen_before = model.backbone.conv_proj.weight.clone()
    result = fit(model, data, config, out_dir=tmp_path, options=RunOptions(device="cpu", progress=False, log=False))
    assert not torch.equal(model.backbone.heads.head.weight, head_before)
    assert torch.equal(model.backbone.conv_proj.weight, frozen_before)
    loaded = load_model(result.checkpoint)
    assert isinstance(loaded, FineTunedViT) and loaded.config == model.config


def test_missing_weights_without_download_give_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert weights_file().parent == tmp_path / "checkpoints"
    with pytest.raises(WeightsUnavailableError, match=r"not at .*allow the download"):
        load_imagenet_weights(FineTunedViT(), download=False)


def test_a_failed_download_leaves_nothing_behind(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError, match=r"could not get .* run on a connected machine") as error:
        load_imagenet_weights(FineTunedViT())
    assert "\n" not in str(error.value) and not any((tmp_path / "checkpoints").iterdir())
    assert "download" not in capsys.readouterr().err  # no notice of a download that did not happen


def test_cached_weights_load_into_the_backbone_and_a_damaged_file_says_so(monkeypatch, tmp_path, model):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights_file().parent.mkdir(parents=True)
    weights_file().write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match=r"is damaged .* delete it"):
        load_imagenet_weights(FineTunedViT())
    torch.save(model.backbone.state_dict(), weights_file())  # stands in for the ImageNet file: same keys and shapes
    loaded = load_imagenet_weights(FineTunedViT(), download=False)
    assert torch.equal(loaded.backbone.encoder.layers[5].mlp[0].weight, model.backbone.encoder.layers[5].mlp[0].weight)
    assert not torch.equal(loaded.backbone.heads.head.weight, model.backbone.heads.head.weight)  # the head stays new


def test_trainable_blocks_must_be_in_range():
    with pytest.raises(ValueError, match=r"trainable_blocks must be an integer in \[0, 12\]"):
        FineTuneConfig(trainable_blocks=13)
