"""Recipes trained as one stacked model train as each would alone (up to rounding), each into its own folder."""

import pytest
import torch

from vit_tutorial import TrainConfig
from vit_tutorial.checkpoint import load_checkpoint
from vit_tutorial.config import ResNetConfig, RunOptions
from vit_tutorial.registry import build_model
from vit_tutorial.stacked import fit_stacked, stackable
from vit_tutorial.train import fit

from .conftest import TINY


def test_each_stacked_recipe_trains_as_it_would_alone(fake_data, tmp_path):
    base = TrainConfig(epochs=3, batch_size=50, warmup_epochs=1, val_size=60, patience=0)
    configs = [
        base,
        base.replace(lr=0.1, augment="trivialaugment", label_smoothing=0.0, qk_decay=0.0),
        base.replace(optimizer="adamw", lr=1e-3, nesterov=False, mixup=0.5, ema=0.5, weight_decay=0.05),
    ]
    # float32 on every CPU: bfloat16 (the default where the CPU has it) rounds the two orders of work apart
    options = RunOptions(device="cpu", progress=False, log=False, precision="fp32")
    alone = [fit(build_model(TINY, seed=i), fake_data, c, options=options) for i, c in enumerate(configs)]
    folders = [tmp_path / f"recipe{i}" for i in range(len(configs))]
    models = [build_model(TINY, seed=i) for i in range(len(configs))]
    together = fit_stacked(models, fake_data, configs, folders, options)
    for one, stacked, folder in zip(alone, together, folders):
        assert len(stacked.history) == len(one.history) == 3
        for a, b in zip(one.history, stacked.history):
            assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4, abs=1e-5)
            assert b.val_loss == pytest.approx(a.val_loss, rel=1e-4, abs=1e-5)
            torch.testing.assert_close(torch.tensor(b.qk_norms), torch.tensor(a.qk_norms), rtol=1e-4, atol=1e-6)
        for name, value in one.model.state_dict().items():
            torch.testing.assert_close(stacked.model.state_dict()[name], value, rtol=1e-3, atol=1e-4)
        assert load_checkpoint(folder / "best.pt")["best_epoch"] == stacked.best_epoch


def test_a_stacked_run_stops_each_recipe_on_its_own_and_resumes_after_an_interruption(fake_data, tmp_path):
    base = TrainConfig(epochs=4, batch_size=50, warmup_epochs=0, val_size=60)
    configs = [base.replace(patience=1, lr=1e-7), base.replace(patience=0)]  # the first stops early

    def stacked(folder, resume=False, on_epoch=None):
        models = [build_model(TINY, seed=3), build_model(TINY, seed=4)]
        folders = [folder / "a", folder / "b"]
        options = RunOptions(device="cpu", progress=False, log=False, resume=resume)
        return fit_stacked(models, fake_data, configs, folders, options, on_epoch=on_epoch)

    whole = stacked(tmp_path / "whole")
    assert whole[0].stopped_early and len(whole[0].history) < 4
    assert not whole[1].stopped_early and len(whole[1].history) == 4
    calls = []

    def stop_in_epoch_two(run, entry):
        calls.append(1)
        if len(calls) == 3:  # epoch 2: the first recipe's epoch is saved, the second's is not
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stacked(tmp_path / "cut", on_epoch=stop_in_epoch_two)
    assert load_checkpoint(tmp_path / "cut" / "a" / "last.pt")["epochs_run"] == 2
    assert load_checkpoint(tmp_path / "cut" / "b" / "last.pt")["epochs_run"] == 1
    resumed = stacked(tmp_path / "cut", resume=True)
    for one, again in zip(whole, resumed):
        assert [h.val_accuracy for h in again.history] == [h.val_accuracy for h in one.history]
        assert again.history[-1].train_loss == pytest.approx(one.history[-1].train_loss, rel=1e-4)


def test_only_matching_recipes_stack():
    base = TrainConfig()
    assert stackable([(TINY, base), (TINY, base.replace(lr=0.1, augment="randaugment"))])
    assert not stackable([(TINY, base), (TINY.replace(depth=3), base)])
    assert not stackable([(TINY, base), (TINY, base.replace(batch_size=128))])
    assert not stackable([(ResNetConfig(), base), (ResNetConfig(), base)])
