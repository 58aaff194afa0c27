import math
import re

import pytest
import torch
import torch.nn.functional as F

from vit_tutorial import TrainConfig, TrainingDivergedError, ViT, run_state
from vit_tutorial.checkpoint import load_checkpoint, save_checkpoint
from vit_tutorial.config import RunOptions
from vit_tutorial.data import normalise
from vit_tutorial.devices import autocast, resolve_precision
from vit_tutorial.errors import CheckpointError
from vit_tutorial.evaluate import loss_and_accuracy
from vit_tutorial.optim import EMA, make_optimizer
from vit_tutorial.parameters import decay_for
from vit_tutorial.registry import build_model
from vit_tutorial.run_state import Run
from vit_tutorial.train import TrainStep, fit, train_runs

from .conftest import TINY, InterruptedDiagnostics, make_split, train_tiny


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = ViT(TINY)
    split = make_split(20)
    images, labels = normalise(split.images), split.labels
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(300):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert (model(images).argmax(1) == labels).all()


def test_fit_learns_and_records_history(fake_data, quick_train_config, tmp_path):
    config = quick_train_config.replace(epochs=12, batch_size=25, lr=0.1)
    result = train_tiny(fake_data, config, out_dir=tmp_path)
    assert [h.epoch for h in result.history] == list(range(1, 13))
    assert set(result.history[0].to_dict()) >= {
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "seconds",
    }
    assert max(h.val_accuracy for h in result.history) > 0.5  # 10 classes: chance is 0.1
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["best_epoch"] == result.best_epoch and best["provenance"]["source"] == "generated"


def test_early_stopping_stops_and_keeps_the_best_weights(fake_data, tmp_path, monkeypatch):
    scores = iter([0.3, 0.6, 0.5, 0.4, 0.2, 0.9])
    snapshots = []

    def fake_validate(model, split, device, batch_size=1000):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return 1.0, next(scores)

    monkeypatch.setattr(run_state, "loss_and_accuracy", fake_validate)
    config = TrainConfig(epochs=6, batch_size=50, warmup_epochs=0, patience=2, val_size=60)
    result = train_tiny(fake_data, config, out_dir=tmp_path)
    assert result.stopped_early and len(result.history) == 4  # best at 2, two worse epochs, stop
    assert result.best_epoch == 2
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][name])


def test_interrupted_run_resumes_from_its_last_epoch_and_matches(fake_data, quick_train_config, tmp_path):
    config = quick_train_config.replace(epochs=4)
    whole = train_tiny(fake_data, config, out_dir=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):  # while epoch 3 is measured, before it is saved
        train_tiny(fake_data, config, out_dir=tmp_path / "cut", diagnostics=InterruptedDiagnostics(fake_data, 3))
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epochs_run"] == 2  # the third epoch was lost, no more
    resumed = train_tiny(fake_data, config, out_dir=tmp_path / "cut", resume=True)
    assert len(resumed.history) == 4
    for a, b in zip(whole.history, resumed.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        assert a.val_accuracy == b.val_accuracy
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(value, resumed.model.state_dict()[name])


def test_nan_validation_loss_stops_and_keeps_the_last_good_epoch(fake_data, quick_train_config, tmp_path, monkeypatch):
    real_validate, calls = run_state.loss_and_accuracy, []

    def validate_then_nan(*args, **kwargs):
        calls.append(1)
        loss, accuracy = real_validate(*args, **kwargs)
        return (math.nan if len(calls) == 2 else loss), accuracy

    monkeypatch.setattr(run_state, "loss_and_accuracy", validate_then_nan)
    with pytest.raises(
        TrainingDivergedError, match=r"val loss became nan in epoch 2; .*last good epoch \(1\); .*--resume"
    ):
        train_tiny(fake_data, quick_train_config, out_dir=tmp_path)
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epochs_run"] == 1 and all(torch.isfinite(v).all() for v in kept["model"].values())
    assert not (tmp_path / "best.pt").exists()


def test_divergence_in_the_first_epoch_says_nothing_was_saved(fake_data, quick_train_config, tmp_path):
    model = build_model(TINY)
    with torch.no_grad():
        model.head.weight.fill_(math.inf)
    with pytest.raises(TrainingDivergedError, match="no epoch finished, so no checkpoint was written"):
        fit(
            model,
            fake_data,
            quick_train_config.replace(grad_clip=0.0),
            out_dir=tmp_path,
            options=RunOptions(device="cpu", progress=False),
        )
    assert not (tmp_path / "last.pt").exists()
    with pytest.raises(TrainingDivergedError, match="nothing was being saved"):
        fit(
            model,
            fake_data,
            quick_train_config.replace(grad_clip=0.0),
            options=RunOptions(device="cpu", progress=False),
        )


def test_resume_may_lower_the_learning_rate_and_records_it(fake_data, quick_train_config, tmp_path):
    train_tiny(fake_data, quick_train_config.replace(epochs=1), out_dir=tmp_path)
    payload = load_checkpoint(tmp_path / "last.pt")
    payload["train_config"]["epochs"] = 3  # as if the run had been cut off after its first of three epochs
    from vit_tutorial.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "last.pt", payload)
    lower = quick_train_config.replace(lr=0.01)
    result = train_tiny(fake_data, lower, out_dir=tmp_path, resume=True)
    assert result.record.config_changes == [{"from_epoch": 2, "lr": [quick_train_config.lr, 0.01]}]
    assert result.history[1].lr <= 0.01 and result.history[0].lr > result.history[1].lr
    assert load_checkpoint(tmp_path / "best.pt")["config_changes"] == result.record.config_changes


def test_compile_falls_back_to_eager_with_a_warning_off_cuda(fake_data, quick_train_config):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the fallback is for CPU and MPS")
    with pytest.warns(UserWarning, match="CUDA only"):
        result = train_tiny(fake_data, quick_train_config.replace(epochs=1), compile=True)
    assert len(result.history) == 1 and math.isfinite(result.history[0].train_loss)


def test_fit_trains_with_mixup_and_cutmix(fake_data, quick_train_config):
    config = quick_train_config.replace(epochs=2, mixup=0.2, cutmix=1.0)
    result = train_tiny(fake_data, config)
    assert all(math.isfinite(h.train_loss) for h in result.history)


def test_resume_accepts_a_checkpoint_written_before_new_config_fields(fake_data, quick_train_config, tmp_path):
    config = quick_train_config.replace(epochs=2)
    train_tiny(fake_data, config.replace(epochs=1), out_dir=tmp_path)
    payload = load_checkpoint(tmp_path / "last.pt")
    payload["train_config"] = {k: v for k, v in config.to_dict().items() if k not in ("mixup", "cutmix")}
    from vit_tutorial.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "last.pt", payload)
    resumed = train_tiny(fake_data, config, out_dir=tmp_path, resume=True)
    assert len(resumed.history) == 2


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_query_key_decay_at_one_is_the_plain_decay_and_at_zero_spares_only_queries_and_keys(optimizer):
    config = TrainConfig(optimizer=optimizer, weight_decay=0.1, lr=0.1, nesterov=optimizer == "sgd")
    plain, rowwise, spared = (build_model(TINY) for _ in range(3))
    for model in (rowwise, spared):
        model.load_state_dict(plain.state_dict())
    optimizers = [
        make_optimizer(plain, config, decay_for(plain, config)),
        make_optimizer(rowwise, config, decay_for(rowwise, config)),  # qk_decay 1: the plain groups
        make_optimizer(spared, config.replace(qk_decay=0.0), decay_for(spared, config.replace(qk_decay=0.0))),
    ]
    images, labels = normalise(make_split(10).images), torch.arange(10)
    for _ in range(3):
        for model, opt in zip((plain, rowwise, spared), optimizers):
            opt.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            for block in model.blocks:  # no gradient reaches the queries and keys: only decay moves them
                block.attn.qkv.weight.grad[: 2 * TINY.dim] = 0.0
            opt.step()
    d = TINY.dim
    for block_plain, block_spared, block_before in zip(plain.blocks, spared.blocks, build_model(TINY).blocks):
        before = block_before.attn.qkv.weight[: 2 * d]
        assert torch.equal(block_spared.attn.qkv.weight[: 2 * d], before)  # spared: untouched
        assert (block_plain.attn.qkv.weight[: 2 * d].norm() < before.norm()).item()  # decayed
    for p, r in zip(plain.parameters(), rowwise.parameters()):
        assert torch.equal(p, r)


def test_query_key_decay_matches_the_decay_of_a_separate_group():
    """With qk_decay 0.5, the query/key rows decay as if they sat in their own group at half the decay."""
    config = TrainConfig(weight_decay=0.2, lr=0.1, qk_decay=0.5)
    model, reference = build_model(TINY), build_model(TINY)
    reference.load_state_dict(model.state_dict())
    optimizer = make_optimizer(model, config, decay_for(model, config))
    qkv = [b.attn.qkv.weight for b in reference.blocks]
    others = [p for n, p in reference.named_parameters() if p.ndim == 2 and "qkv" not in n]
    rest = [
        p for n, p in reference.named_parameters() if not (p.ndim == 2 and "qkv" not in n) and "qkv.weight" not in n
    ]
    sgd = torch.optim.SGD(
        [
            {"params": others, "weight_decay": 0.2},
            {"params": rest, "weight_decay": 0.0},
            {"params": qkv, "weight_decay": 0.1},  # all rows at half: compare the q and k rows below
        ],
        lr=0.1,
        momentum=0.9,
        nesterov=True,
    )
    images, labels = normalise(make_split(10).images), torch.arange(10)
    for model_, opt in ((model, optimizer), (reference, sgd)):
        for _ in range(2):
            opt.zero_grad()
            F.cross_entropy(model_(images), labels).backward()
            opt.step()
    d = TINY.dim
    for ours, theirs in zip(model.blocks, reference.blocks):
        torch.testing.assert_close(ours.attn.qkv.weight[: 2 * d], theirs.attn.qkv.weight[: 2 * d])


def test_prefetching_the_next_epoch_changes_nothing(fake_data, quick_train_config):
    """The GPU path prepares each epoch's batches while the previous epoch trains; on the CPU the same code
    must give exactly the batches, and so the run, of the plain path."""
    config = quick_train_config.replace(epochs=3, augment="trivialaugment", mixup=0.5, random_erasing=0.5)
    plain = train_tiny(fake_data, config)
    cpu = torch.device("cpu")
    run = Run(build_model(TINY), fake_data, config, device=cpu, precision=resolve_precision("auto", cpu))
    run.prefetch = True
    run.start(None, resume=False)
    (ahead,) = train_runs([run], [None], RunOptions(device="cpu", progress=False))
    assert [h.train_loss for h in ahead.history] == [h.train_loss for h in plain.history]
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, ahead.model.state_dict()[name])


def _source_checkpoint(data, config, tmp_path, collapse_layer: int | None = None, **changes):
    """best.pt of a short tiny run, with the query/key weights of `collapse_layer` (0-based) shrunk to 1% and
    the payload fields in `changes` replaced."""
    train_tiny(data, config, out_dir=tmp_path / "source")
    payload = load_checkpoint(tmp_path / "source" / "best.pt")
    if collapse_layer is not None:
        weight = payload["model"][f"blocks.{collapse_layer}.attn.qkv.weight"]
        weight[: 2 * TINY.dim] *= 0.01
    payload.update(changes)
    content = {key: value for key, value in payload.items() if key not in ("format", "version", "content_sha256")}
    return save_checkpoint(tmp_path / "source.pt", content), payload["model"]


def test_a_warm_start_loads_the_weights_and_revives_only_the_collapsed_layer(fake_data, quick_train_config, tmp_path):
    source, weights = _source_checkpoint(fake_data, quick_train_config, tmp_path, collapse_layer=1)
    # lr 0: the first epoch's diagnostics and the saved weights are the starting point itself
    config = quick_train_config.replace(epochs=1, lr=0.0, init_from=str(source), revive=3.0)
    model = build_model(TINY)
    result = fit(model, fake_data, config, options=RunOptions(device="cpu", progress=False))
    state = result.model.state_dict()
    changed = [name for name, value in weights.items() if not torch.equal(state[name], value)]
    assert changed == ["blocks.1.attn.qkv.weight"]
    d = TINY.dim
    assert torch.equal(state["blocks.1.attn.qkv.weight"][2 * d :], weights["blocks.1.attn.qkv.weight"][2 * d :])
    fresh = 0.02 * math.sqrt(d * d)  # the norm a newly initialised d x d weight has
    revived_norms = result.history[0].qk_norms[1]
    assert all(0.8 * 3 * fresh < norm < 1.2 * 3 * fresh for norm in revived_norms)
    # the record says where the run began: the checkpoint, its collapsed norms as loaded, the layer revived
    start = result.record.started_from
    assert start["checkpoint"] == "source.pt" and start["revived"] == [2] and start["revive_scale"] == 3.0
    assert max(start["qk_norms"][1]) < 0.1 * fresh < min(start["qk_norms"][0])
    assert len(start["cls_spread"]) == TINY.depth
    # without revive, the collapsed weights are loaded as they are
    plain = fit(
        build_model(TINY), fake_data, config.replace(revive=0.0), options=RunOptions(device="cpu", progress=False)
    )
    assert all(torch.equal(plain.model.state_dict()[name], value) for name, value in weights.items())


def test_a_warm_start_refuses_another_model_or_another_validation_split(fake_data, quick_train_config, tmp_path):
    provenance = {**fake_data.provenance, "split_seed": 0, "val_size": 60}
    source, _ = _source_checkpoint(fake_data, quick_train_config, tmp_path, provenance={**provenance, "split_seed": 7})
    data = type(fake_data)(fake_data.train, fake_data.val, fake_data.test, provenance)
    config = quick_train_config.replace(epochs=1, init_from=str(source))
    with pytest.raises(CheckpointError, match=re.escape("validated on another split (split_seed 7, this run 0)")):
        fit(build_model(TINY), data, config, options=RunOptions(device="cpu", progress=False))
    with pytest.raises(CheckpointError, match="start from a checkpoint of the same model"):
        fit(build_model(TINY.replace(dim=32)), data, config, options=RunOptions(device="cpu", progress=False))
    with pytest.raises(ValueError, match="revive needs init_from"):
        TrainConfig(revive=1.0)
    with pytest.raises(ValueError, match="revive must be >= 0"):
        TrainConfig(init_from="x.pt", revive=-1.0)


def test_with_ema_validation_and_best_weights_are_the_averaged_ones(fake_data, quick_train_config, tmp_path):
    config = quick_train_config.replace(epochs=2, ema=0.5, augment="trivialaugment", random_erasing=0.25)
    model = build_model(TINY)
    validated = []

    def check(run, entry):  # what the epoch's validation measured is the averaged copy's loss, not the model's
        with autocast(run.device, run.precision):
            validated.append(
                [entry.val_loss == loss_and_accuracy(m, fake_data.val, run.device)[0] for m in (run.ema.model, model)]
            )

    result = fit(
        model, fake_data, config, out_dir=tmp_path, options=RunOptions(device="cpu", progress=False), on_epoch=check
    )
    assert validated == [[True, False], [True, False]]
    from vit_tutorial.checkpoint import load_checkpoint

    last = load_checkpoint(tmp_path / "last.pt")
    best = load_checkpoint(tmp_path / "best.pt")
    if result.best_epoch == 2:
        for name, value in best["model"].items():
            torch.testing.assert_close(value, last["ema"][name])
            assert not torch.equal(value, last["model"][name])
    resumed = fit(
        build_model(TINY),
        fake_data,
        config.replace(epochs=3),
        out_dir=tmp_path / "r",
        options=RunOptions(device="cpu", progress=False),
    )
    assert len(resumed.history) == 3


def test_a_compiled_step_changes_the_weights_as_an_eager_step_does(fake_data):
    config = TrainConfig(batch_size=20, lr=0.1, warmup_epochs=0, mixup=0.2)
    images, labels = torch.randn(20, 3, 32, 32), torch.arange(20) % 10
    targets = torch.nn.functional.one_hot(labels, 10).float() * 0.7 + 0.03
    results = []
    for compiled in (False, True):
        model = build_model(TINY, seed=0)
        forward = torch.compile(model) if compiled else model
        optimizer = make_optimizer(model, config)
        step = TrainStep(model, forward, optimizer, config, torch.device("cpu"), EMA(model, 0.9))
        model.train()
        for _ in range(2):
            step(images, targets, labels)
        results.append((model.state_dict(), step.ema.model.state_dict(), step.loss_sum.item()))
    (eager, eager_ema, eager_loss), (compiled, compiled_ema, compiled_loss) = results
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(compiled_ema[name], eager_ema[name], rtol=1e-4, atol=1e-5)
    assert not torch.equal(eager["head.weight"], build_model(TINY, seed=0).state_dict()["head.weight"])
