"""The optimiser's pieces: the learning-rate schedule, which weights decay, and the moving average of the weights."""

import itertools

import pytest
import torch

from vit_tutorial import TrainConfig, ViT
from vit_tutorial.optim import EMA, lr_factor, make_optimizer
from vit_tutorial.registry import build_model

from .conftest import TINY


def test_ema_follows_its_formula():
    model = build_model(TINY)
    ema = EMA(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ema.model.state_dict()[name], 0.9 * before[name] + 0.1 * value)


def test_warmup_then_cosine_schedule():
    factors = [lr_factor(s, warmup_steps=10, total_steps=110, schedule="cosine") for s in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.5)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert lr_factor(50, warmup_steps=10, total_steps=110, schedule="constant") == 1.0


def test_weight_decay_skips_biases_norms_and_embeddings():
    model = ViT(TINY)
    decay, no_decay = make_optimizer(model, TrainConfig()).param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"])
    assert any(p is model.pos_embed for p in no_decay["params"]) and any(
        p is model.cls_token for p in no_decay["params"]
    )
