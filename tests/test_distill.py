"""Distillation through the CLS head: the loss, and a tiny run that learns from a frozen teacher."""

import pytest
import torch
import torch.nn.functional as F

from vit_tutorial import CheckpointError, TrainConfig
from vit_tutorial.checkpoint import save_checkpoint
from vit_tutorial.config import RunOptions
from vit_tutorial.distill import distillation_loss, load_teacher
from vit_tutorial.registry import build_model
from vit_tutorial.train import fit

from .conftest import TINY, payload_of


def test_hard_and_soft_losses_follow_their_formulas():
    student, teacher = torch.randn(6, 10), torch.randn(6, 10)
    supervised = torch.tensor(1.5)
    hard = TrainConfig(distillation="hard", teacher="t.pt", distill_weight=0.25)
    expected = 0.75 * supervised + 0.25 * F.cross_entropy(student, teacher.argmax(1))
    torch.testing.assert_close(distillation_loss(student, teacher, supervised, hard), expected)
    soft = hard.replace(distillation="soft", distill_temperature=2.0)
    p, log_q = (teacher / 2).softmax(1), (student / 2).log_softmax(1)
    kl = (p * (p.log() - log_q)).sum(1).mean() * 4
    torch.testing.assert_close(distillation_loss(student, teacher, supervised, soft), 0.75 * supervised + 0.25 * kl)
    same = distillation_loss(teacher, teacher, torch.tensor(0.0), soft.replace(distill_weight=1.0))
    assert same.abs() < 1e-6  # matching the teacher exactly costs nothing


def test_teacher_and_mode_go_together():
    with pytest.raises(ValueError, match="distillation and teacher go together"):
        TrainConfig(distillation="hard")
    with pytest.raises(ValueError, match="distillation and teacher go together"):
        TrainConfig(teacher="runs/resnet/best.pt")


def test_a_run_learns_from_a_frozen_teacher(fake_data, quick_train_config, tmp_path):
    teacher = fit(
        build_model(TINY),
        fake_data,
        quick_train_config.replace(epochs=4),
        options=RunOptions(device="cpu", progress=False),
    )
    path = save_checkpoint(tmp_path / "teacher.pt", payload_of(teacher.model))
    before = {k: v.clone() for k, v in load_teacher(path).state_dict().items()}
    loaded = load_teacher(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    config = quick_train_config.replace(epochs=2, distillation="soft", teacher=str(path), mixup=0.5)
    result = fit(
        build_model(TINY, seed=1),
        fake_data,
        config,
        out_dir=tmp_path / "s",
        options=RunOptions(device="cpu", progress=False),
    )
    assert len(result.history) == 2 and all(torch.isfinite(torch.tensor(h.train_loss)) for h in result.history)
    for name, value in load_teacher(path).state_dict().items():
        assert torch.equal(value, before[name])
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        fit(
            build_model(TINY),
            fake_data,
            config.replace(teacher=str(tmp_path / "none.pt")),
            options=RunOptions(device="cpu"),
        )
