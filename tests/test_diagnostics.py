"""Every run records whether each layer still attends: query/key norms, CLS spreads, clean training accuracy."""

import warnings

import pytest
import torch

from vit_tutorial import TrainConfig, ViT
from vit_tutorial.attention_maps import cls_spread, flat_threshold
from vit_tutorial.config import RunOptions
from vit_tutorial.data import normalise
from vit_tutorial.diagnostics import Diagnostics, gone_uniform, measure, qk_norms, uniform_layers
from vit_tutorial.parameters import query_key_weights
from vit_tutorial.record import EpochEntry
from vit_tutorial.registry import build_model
from vit_tutorial.train import fit

from .conftest import ENTRY, TINY, make_split


def test_query_and_key_rows_are_found_in_both_attention_layouts():
    model = ViT(TINY)
    found = query_key_weights(model)
    assert len(found) == TINY.depth and all(w.shape == (3 * TINY.dim, TINY.dim) and d == TINY.dim for w, d in found)
    attention = torch.nn.MultiheadAttention(8, 2)
    assert query_key_weights(attention) == [(attention.in_proj_weight, 8)]
    with torch.no_grad():
        model.blocks[1].attn.qkv.weight[TINY.dim : 2 * TINY.dim] = 0.0  # block 2's keys
    norms = qk_norms(model)
    assert norms[1][1] == 0.0 and norms[1][0] > 0 and norms[0][1] > 0


def test_a_layer_without_query_and_key_weights_attends_uniformly_and_is_named():
    model = ViT(TINY.replace(depth=3)).eval()
    with torch.no_grad():
        for block in (model.blocks[0], model.blocks[2]):
            block.attn.qkv.weight[: 2 * TINY.dim] *= 50  # sharp attention
        model.blocks[1].attn.qkv.weight[: 2 * TINY.dim] = 0.0  # q = k = 0: every score equal
        model.blocks[1].attn.qkv.bias.zero_()
    found = measure(model, probe=make_split(20).images, clean=make_split(20), device=torch.device("cpu"))
    assert len(found["cls_spread"]) == 3 and found["cls_spread"][1] == pytest.approx(0.0, abs=1e-6)
    assert found["cls_spread"][0] > flat_threshold(17) and 0 <= found["train_clean_accuracy"] <= 1
    assert uniform_layers(found["cls_spread"], num_tokens=17) == [2]


def test_every_epoch_records_the_diagnostics(fake_data):
    config = TrainConfig(epochs=2, batch_size=50, warmup_epochs=0, val_size=60, grad_clip=0.01)
    result = fit(build_model(TINY), fake_data, config, options=RunOptions(device="cpu", progress=False, log=False))
    for entry in result.history:
        assert len(entry.qk_norms) == TINY.depth and len(entry.cls_spread) == TINY.depth
        assert 0 <= entry.train_clean_accuracy <= 1
        assert entry.clipped == 1.0  # a clip at 0.01 clips every step


def test_only_a_layer_that_went_uniform_is_reported():
    """A fresh model attends almost evenly (small query/key weights), so uniform attention is a symptom only
    once a layer had attended, or once its query/key weights shrank to a tenth of where they started."""
    flat, sharp = 0.0001, 0.05
    history = [
        EpochEntry(**ENTRY, cls_spread=[sharp, flat, flat], qk_norms=[[2.5, 2.5], [2.5, 2.5], [2.5, 2.5]]),
        EpochEntry(**ENTRY, cls_spread=[flat, flat, flat], qk_norms=[[2.0, 2.0], [2.4, 2.4], [0.2, 0.2]]),
    ]
    assert uniform_layers(history[-1].cls_spread, 17) == [1, 2, 3]
    assert gone_uniform(history, 17) == [1, 3]  # 1 attended before; 3's queries and keys collapsed
    assert gone_uniform(history[:1], 17) == []  # the first epoch: nothing went anywhere yet


class Collapsing(Diagnostics):
    """Layer 2 attends in the first epoch, then goes flat."""

    calls = 0

    def __call__(self, model, device, precision="fp32"):
        found = super().__call__(model, device, precision)
        found["cls_spread"][1] = 0.2 if self.calls == 0 else 0.0
        self.calls += 1
        return found


def test_training_warns_once_when_a_layer_goes_uniform(fake_data):
    config = TrainConfig(epochs=3, batch_size=50, warmup_epochs=0, val_size=60)
    base = Diagnostics.for_run(TINY, fake_data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(
            build_model(TINY),
            fake_data,
            config,
            diagnostics=Collapsing(base.probe, base.clean),
            options=RunOptions(device="cpu", progress=False, log=False),
        )
    uniform = [w for w in caught if "gone uniform" in str(w.message)]
    assert (
        len(uniform) == 1 and "epoch 2" in str(uniform[0].message) and "layer(s) 2 (q/k norm" in str(uniform[0].message)
    )


def test_the_shipped_model_has_the_dead_layers_the_book_describes():
    from vit_tutorial import load_pretrained

    model = load_pretrained()
    norms = qk_norms(model)
    _, attentions = model(normalise(make_split(16).images), return_attention=True)
    spread = cls_spread(attentions)
    dead = [i + 1 for i, (q, k) in enumerate(norms) if q < 0.1 and k < 0.1]
    assert dead == [4, 6, 11]  # blocks 4, 6 and 11: q and k decayed to ~0.05 (chapter 6)
    assert all(spread[layer - 1] < flat_threshold(17) for layer in dead)
