"""The long run's pieces: warmup-stable-decay, cooldowns branched from a run, decay on the blocks only,
snapshots, and a constant-rate run extended on resume."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from vit_tutorial import ResNetConfig, TrainConfig
from vit_tutorial.checkpoint import load_checkpoint
from vit_tutorial.data import normalise
from vit_tutorial.errors import CheckpointError
from vit_tutorial.optim import lr_factor, make_optimizer
from vit_tutorial.parameters import decay_for, decays
from vit_tutorial.registry import build_model

from .conftest import TINY, InterruptedDiagnostics, make_split, train_tiny

CONSTANT = TrainConfig(
    epochs=3, batch_size=50, lr=0.05, warmup_epochs=1, schedule="constant", patience=0, val_size=60, ema=0.9
)


def test_a_cooldown_decays_the_last_steps_to_zero_in_the_one_minus_sqrt_shape():
    factor = [
        lr_factor(s, warmup_steps=10, total_steps=110, schedule="constant", cooldown_steps=40) for s in range(110)
    ]
    assert factor[9] == pytest.approx(1.0) and factor[69] == 1.0  # warmup, then stable until step 70
    assert factor[70] == 1.0 and factor[80] == pytest.approx(1 - 0.5)  # a quarter in: 1 - sqrt(1/4)
    assert factor[109] == pytest.approx(1 - (39 / 40) ** 0.5)
    assert all(a > b for a, b in itertools.pairwise(factor[70:]))
    assert all(f > 0 for f in factor)


def test_a_cooldown_needs_a_constant_rate_and_fits_in_the_epochs():
    with pytest.raises(ValueError, match="constant"):
        TrainConfig(cooldown_epochs=5)
    with pytest.raises(ValueError, match="do not fit"):
        TrainConfig(schedule="constant", epochs=10, warmup_epochs=5, cooldown_epochs=6)
    with pytest.raises(ValueError, match="cooldown_epochs"):
        TrainConfig(schedule="constant", branch_from="x.pt")


@pytest.mark.parametrize("scope", ["matrices", "blocks", "blocks+head"])
def test_decay_scope_names_the_decayed_weights(scope):
    model = build_model(TINY)
    decayed = {name for name, param in model.named_parameters() if decays(name, param, scope)}
    in_blocks = {n for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2}
    assert in_blocks <= decayed  # the MLP, attention output and fused qkv weights of every block
    assert ("patch_embed.proj.weight" in decayed) == (scope == "matrices")
    assert ("head.weight" in decayed) == (scope != "blocks")
    assert not decayed & {"cls_token", "pos_embed"} and not any("bias" in n or "norm" in n for n in decayed)


def test_blocks_scope_decays_values_but_spares_queries_keys_and_everything_outside_the_blocks():
    """With no gradient at all, only decay moves a weight: after some steps the value rows, MLP and attention
    output have shrunk, and the query/key rows, patch embedding and head are exactly as they were."""
    config = TrainConfig(weight_decay=0.1, lr=0.1, decay_scope="blocks")
    model = build_model(TINY)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = make_optimizer(model, config, decay_for(model, config))
    images, labels = normalise(make_split(10).images), torch.arange(10)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        for param in model.parameters():
            param.grad.zero_()
        optimizer.step()
    after = dict(model.named_parameters())
    d = TINY.dim
    for i in range(TINY.depth):
        qkv = f"blocks.{i}.attn.qkv.weight"
        assert torch.equal(after[qkv][: 2 * d], before[qkv][: 2 * d])
        assert after[qkv][2 * d :].norm() < before[qkv][2 * d :].norm()
        for name in (f"blocks.{i}.attn.proj.weight", f"blocks.{i}.mlp.fc1.weight", f"blocks.{i}.mlp.fc2.weight"):
            assert after[name].norm() < before[name].norm()
    for name in ("patch_embed.proj.weight", "head.weight", "cls_token", "pos_embed"):
        assert torch.equal(after[name], before[name])


def test_blocks_scope_is_refused_for_a_model_without_the_vits_blocks():
    with pytest.raises(ValueError, match="matrices"):
        decay_for(build_model(ResNetConfig()), TrainConfig(decay_scope="blocks"))


def test_snapshots_keep_every_nth_epoch(fake_data, tmp_path):
    train_tiny(fake_data, CONSTANT.replace(epochs=4), out_dir=tmp_path, snapshot_every=2)
    snapshots = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert snapshots == ["epoch_0002.pt", "epoch_0004.pt"]
    assert load_checkpoint(tmp_path / "snapshots" / "epoch_0002.pt")["epochs_run"] == 2


def test_a_constant_rate_run_can_be_extended_on_resume_and_a_cosine_one_cannot(fake_data, tmp_path):
    train_tiny(fake_data, CONSTANT.replace(epochs=2), out_dir=tmp_path / "constant")
    extended = train_tiny(fake_data, CONSTANT.replace(epochs=3), out_dir=tmp_path / "constant", resume=True)
    assert extended.record.epochs_run == 3
    assert extended.record.config_changes[-1]["epochs"] == [2, 3]
    cosine = CONSTANT.replace(schedule="cosine", epochs=2)
    train_tiny(fake_data, cosine, out_dir=tmp_path / "cosine")
    with pytest.raises(CheckpointError, match="only a constant rate can be extended"):
        train_tiny(fake_data, cosine.replace(epochs=3), out_dir=tmp_path / "cosine", resume=True)


def test_a_cooldown_continues_the_main_run_exactly_where_it_stopped(fake_data, tmp_path):
    """A cooldown of 2 epochs branched from epoch 2 of a 4-epoch constant run follows that run's weights,
    momentum and EMA: with a cooldown so gentle that it changes nothing (lr 0 in both), the first epoch of
    the branch equals the third epoch of the main run; and the history carries over."""
    main = CONSTANT.replace(epochs=4)
    train_tiny(fake_data, main, out_dir=tmp_path / "main", snapshot_every=2)
    snapshot = tmp_path / "main" / "snapshots" / "epoch_0002.pt"
    cooldown = main.replace(cooldown_epochs=2, branch_from=str(snapshot))
    result = train_tiny(fake_data, cooldown, out_dir=tmp_path / "cooldown")
    history = result.history
    assert [e.epoch for e in history] == [1, 2, 3, 4]
    reference = load_checkpoint(tmp_path / "main" / "last.pt")["history"]
    assert [entry.to_dict() for entry in history[:2]] == reference[:2]  # carried over
    # epoch 3 of the cooldown starts at the full rate, where the main run's epoch 3 did: same first rate
    assert history[2].lr == reference[2]["lr"]
    assert history[3].lr < reference[3]["lr"]  # then decays
    assert result.record.branched_from["epochs_run"] == 2
    assert result.best_epoch in (3, 4)  # chosen among the cooldown's own epochs
    stored = load_checkpoint(tmp_path / "cooldown" / "best.pt")
    assert stored["branched_from"]["checkpoint"] == str(snapshot)


def test_a_branched_cooldown_equals_a_run_that_planned_it_from_the_start(fake_data, tmp_path):
    """Warmup-stable-decay in one run, and the same cooldown branched later from that run's stable phase,
    train the same weights: the branch takes over weights, momentum, EMA and the schedule's position."""
    planned = CONSTANT.replace(epochs=4, cooldown_epochs=2)
    whole = train_tiny(fake_data, planned, out_dir=tmp_path / "planned")
    train_tiny(fake_data, CONSTANT.replace(epochs=2), out_dir=tmp_path / "main")
    branch = planned.replace(branch_from=str(tmp_path / "main" / "last.pt"))
    branched = train_tiny(fake_data, branch, out_dir=tmp_path / "cooldown")
    for a, b in zip(whole.history, branched.history):
        assert a.lr == b.lr
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        assert a.val_accuracy == b.val_accuracy
    planned_last = load_checkpoint(tmp_path / "planned" / "last.pt")
    branched_last = load_checkpoint(tmp_path / "cooldown" / "last.pt")
    for key in ("model", "ema"):
        for name, value in planned_last[key].items():
            torch.testing.assert_close(branched_last[key][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 5}, "give --epochs 4"),
        ({"lr": 0.1}, "lr differ"),
        ({"augment": "none"}, "augment differ"),
    ],
)
def test_a_cooldown_that_does_not_fit_its_branch_is_one_line(fake_data, tmp_path, change, message):
    main = CONSTANT.replace(epochs=2)
    train_tiny(fake_data, main, out_dir=tmp_path / "main")
    cooldown = main.replace(epochs=4, cooldown_epochs=2, branch_from=str(tmp_path / "main" / "last.pt"))
    with pytest.raises(CheckpointError, match=message):
        train_tiny(fake_data, cooldown.replace(**change))


def test_a_cooldown_refuses_a_cosine_run_and_a_best_checkpoint(fake_data, tmp_path):
    cosine = CONSTANT.replace(schedule="cosine", epochs=2)
    train_tiny(fake_data, cosine, out_dir=tmp_path / "cosine")
    branch = CONSTANT.replace(epochs=3, cooldown_epochs=1, branch_from=str(tmp_path / "cosine" / "last.pt"))
    with pytest.raises(CheckpointError, match="not from a constant-rate run"):
        train_tiny(fake_data, branch)
    train_tiny(fake_data, CONSTANT.replace(epochs=2), out_dir=tmp_path / "main")
    branch = CONSTANT.replace(epochs=3, cooldown_epochs=1, branch_from=str(tmp_path / "main" / "best.pt"))
    with pytest.raises(CheckpointError, match="weights only"):
        train_tiny(fake_data, branch)


def test_an_interrupted_cooldown_resumes_from_its_own_last_epoch_and_matches(fake_data, tmp_path):
    main = CONSTANT.replace(epochs=2)
    train_tiny(fake_data, main, out_dir=tmp_path / "main")
    cooldown = main.replace(epochs=5, cooldown_epochs=3, branch_from=str(tmp_path / "main" / "last.pt"))
    whole = train_tiny(fake_data, cooldown, out_dir=tmp_path / "whole")
    # stopped while the cooldown's second epoch is measured (its first finished and was saved)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(fake_data, cooldown, out_dir=tmp_path / "cut", diagnostics=InterruptedDiagnostics(fake_data, 2))
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epochs_run"] == 3
    resumed = train_tiny(fake_data, cooldown, out_dir=tmp_path / "cut", resume=True)
    assert [e.epoch for e in resumed.history] == [1, 2, 3, 4, 5]
    for a, b in zip(whole.history, resumed.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        assert a.val_accuracy == b.val_accuracy
    assert resumed.record.branched_from == whole.record.branched_from
    assert resumed.best_epoch == whole.best_epoch


@pytest.mark.slow  # a command in a subprocess
def test_a_run_chosen_by_validation_leaves_the_test_set_alone_until_it_is_shipped(cli_workspace, monkeypatch):
    import json
    import sys
    from pathlib import Path

    from .conftest import run, train_args

    root, env = cli_workspace
    out = root / "runs" / "cooldown"
    trained = run(*train_args(out, "--no-test"), env=env)
    assert trained.returncode == 0 and "test set was left alone" in trained.stdout, trained.stderr
    assert (out / "best.pt").is_file() and not (out / "metrics.json").exists()
    monkeypatch.setenv("VIT_TUTORIAL_DATA", env["VIT_TUTORIAL_DATA"])
    monkeypatch.setenv("VIT_TUTORIAL_CACHE", env["VIT_TUTORIAL_CACHE"])
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tools"))
    sys.modules.pop("ship_pretrained", None)
    import ship_pretrained

    best = load_checkpoint(out / "best.pt")
    ship_pretrained.measure_test(out, best)  # what shipping does, once, for a run trained with --no-test
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint_sha256"] == best["content_sha256"] and metrics["num_images"] == 10
