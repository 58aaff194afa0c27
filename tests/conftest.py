"""Shared fixtures: a tiny model config and generated CIFAR-shaped data (never a download)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vit_tutorial import TrainConfig, ViTConfig
from vit_tutorial.config import RunOptions
from vit_tutorial.data import CIFAR10, CLASSES, Split
from vit_tutorial.diagnostics import Diagnostics
from vit_tutorial.registry import build_model
from vit_tutorial.train import fit

TINY = ViTConfig(dim=16, depth=2, heads=2, mlp_dim=32)
# one epoch of a history, as a file holds it (the fields every entry has)
ENTRY = {
    "epoch": 1,
    "lr": 0.05,
    "train_loss": 2.2,
    "train_accuracy": 0.15,
    "val_loss": 2.1,
    "val_accuracy": 0.2,
    "seconds": 1.5,
    "images_per_second": 100.0,
}


def make_split(n: int, seed: int = 0) -> Split:
    """Learnable fake images: each class has its own colour and a bright square at its own place."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    images = torch.randint(0, 60, (n, 3, 32, 32), generator=generator)
    for i, label in enumerate(labels.tolist()):
        images[i, label % 3] += 100 + 10 * label
        row, col = divmod(label, 4)
        images[i, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] = 250
    return Split(images.clamp(0, 255).to(torch.uint8), labels)


def payload_of(model, config=None, **fields):
    """The least a checkpoint holds: the model, its configuration, and the record's required fields."""
    config = config if config is not None else model.config
    return {
        "architecture": "vit",
        "model_config": config.to_dict(),
        "model": model.state_dict(),
        "provenance": {"source": "generated"},
        "hardware": "test",
        **fields,
    }


def train_tiny(data, config, *, out_dir=None, on_epoch=None, model=None, diagnostics=None, **options):
    """`fit` on a fresh tiny model (or on `model`), on the CPU, without progress bars; `options` are RunOptions."""
    model = model if model is not None else build_model(TINY)
    run_options = RunOptions(device="cpu", progress=False, **options)
    return fit(model, data, config, out_dir=out_dir, on_epoch=on_epoch, diagnostics=diagnostics, options=run_options)


class InterruptedDiagnostics(Diagnostics):
    """A run's diagnostics that stop it with Ctrl-C while epoch `epoch` (1-based) is measured: after the epoch
    trained, before it is saved."""

    def __init__(self, data: CIFAR10, epoch: int) -> None:
        base = Diagnostics.for_run(TINY, data)
        super().__init__(base.probe, base.clean)
        self.epoch, self.calls = epoch, 0

    def __call__(self, model, device, precision="fp32"):
        self.calls += 1
        if self.calls == self.epoch:
            raise KeyboardInterrupt
        return super().__call__(model, device, precision)


@pytest.fixture
def tiny_config() -> ViTConfig:
    return TINY


@pytest.fixture
def fake_data() -> CIFAR10:
    return CIFAR10(
        make_split(200, 1),
        make_split(60, 2),
        make_split(60, 3),
        {"source": "generated", "root": "-", "description": "generated"},
    )


@pytest.fixture
def quick_train_config() -> TrainConfig:
    return TrainConfig(epochs=3, batch_size=50, lr=0.05, warmup_epochs=1, patience=5, val_size=60, augment="flip-crop")


def write_image_folder(root: Path, per_class: int = 3, size: int = 32) -> Path:
    """A tiny CIFAR-10 image folder: train/<class>/*.png and test/<class>/*.png."""
    from PIL import Image

    for split, n in (("train", per_class), ("test", 1)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (size, size), (label * 25, i * 40, 255 - label * 25)).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VIT_TUTORIAL_CACHE", str(tmp_path / "cache"))
    return write_image_folder(tmp_path / "cifar")


# The command line, run in a subprocess as a user runs it ----------------------------------------------------------

TINY_ARGS = ["--dim", "16", "--depth", "2", "--heads", "2", "--mlp-dim", "32", "--batch-size", "10", "--val-size", "10"]


def run(*args, env=None, cwd=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "vit_tutorial", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=timeout,
    )


@pytest.fixture
def cli_workspace(tmp_path):
    """A tiny image folder and an environment that points data, cache and runs into this test's folder."""
    write_image_folder(tmp_path / "cifar", per_class=6)
    env = {
        **os.environ,
        "VIT_TUTORIAL_CACHE": str(tmp_path / "cache"),
        "VIT_TUTORIAL_DATA": str(tmp_path / "cifar"),
        "VIT_TUTORIAL_RUNS": str(tmp_path / "runs"),
    }
    env.pop("VIT_TUTORIAL_DEBUG", None)
    return tmp_path, env


def one_clean_line(result, code=2):
    """The failure a user sees: the exit status `code` and one line on stderr, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def train_args(out, *extra):
    return ("train", "--out", str(out), "--epochs", "1", "--warmup-epochs", "0", "--no-progress", *TINY_ARGS, *extra)
