"""The CNN baseline: shape, parameter count, the shared trainer, and checkpoints that know their model."""

import pytest
import torch

from vit_tutorial import ResNet, ResNetConfig, TrainConfig, ViT, ViTConfig, count_parameters
from vit_tutorial.checkpoint import load_model, save_checkpoint
from vit_tutorial.config import RunOptions
from vit_tutorial.errors import CheckpointError
from vit_tutorial.records import find_finished_run
from vit_tutorial.registry import architecture_of, build_model
from vit_tutorial.train import fit


def test_cifar_stem_keeps_full_resolution_and_pins_parameter_count():
    model = ResNet()
    assert model.net.conv1.kernel_size == (3, 3) and model.net.conv1.stride == (1, 1)
    assert isinstance(model.net.maxpool, torch.nn.Identity)
    assert count_parameters(model) == 11_173_962  # torchvision resnet18 with a 3x3 stem and 10 classes
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\), got \(2, 1, 32, 32\)"):
        ResNet()(torch.randn(2, 1, 32, 32))


def test_build_model_picks_the_architecture_from_the_config(tiny_config):
    assert isinstance(build_model(ResNetConfig()), ResNet)
    assert isinstance(build_model(tiny_config), ViT)
    assert (
        architecture_of(build_model(ResNetConfig())) == "resnet" and architecture_of(build_model(tiny_config)) == "vit"
    )


def test_shared_trainer_learns_and_checkpoint_rebuilds_a_resnet(fake_data, tmp_path):
    config = TrainConfig(epochs=2, batch_size=50, lr=0.05, warmup_epochs=1, patience=5, val_size=60)
    data = fake_data.subset(100, 30, 30)
    result = fit(
        build_model(ResNetConfig(), seed=0),
        data,
        config,
        out_dir=tmp_path / "run",
        options=RunOptions(device="cpu", progress=False, log=False),
    )
    assert len(result.history) == 2
    assert result.history[-1].train_loss < result.history[0].train_loss
    loaded = load_model(result.checkpoint)
    assert isinstance(loaded, ResNet)
    images = torch.randn(3, 3, 32, 32)
    assert torch.allclose(loaded(images), result.model.cpu().eval()(images), atol=1e-5)
    found = find_finished_run(ResNetConfig(), config, runs=tmp_path)
    assert found is not None and found.record.architecture == "resnet"
    assert find_finished_run(ViTConfig(), config, runs=tmp_path) is None  # a ResNet run is not a ViT run


def test_checkpoint_of_unknown_architecture_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "odd.pt", {"architecture": "mlp-mixer", "model_config": {}, "model": {}})
    with pytest.raises(CheckpointError, match="'mlp-mixer' model"):
        load_model(path)
