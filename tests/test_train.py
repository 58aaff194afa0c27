import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vit_tutorial import CheckpointError, TrainConfig, TrainingDivergedError, ViT, pretrained, runs
from vit_tutorial import train as train_module
from vit_tutorial.checkpoint import load_checkpoint
from vit_tutorial.data import normalize
from vit_tutorial.registry import build_model
from vit_tutorial.train import fit, lr_factor, make_optimizer, select_device

from .conftest import TINY, make_split


def train_tiny(data, config, **options):
    """`fit` on a fresh tiny model, on the CPU, without progress bars."""
    return fit(build_model(TINY), data, config, device="cpu", progress=False, **options)


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = ViT(TINY)
    split = make_split(20)
    images, labels = normalize(split.images), split.labels
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(300):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert (model(images).argmax(1) == labels).all()


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


def test_fit_learns_and_records_history(fake_data, quick_train_config, tmp_path):
    config = quick_train_config.replace(epochs=12, batch_size=25, lr=0.1)
    result = train_tiny(fake_data, config, out_dir=tmp_path)
    assert [h["epoch"] for h in result.history] == list(range(1, 13))
    assert set(result.history[0]) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert max(h["val_accuracy"] for h in result.history) > 0.5  # 10 classes: chance is 0.1
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["best_epoch"] == result.best_epoch and best["provenance"]["source"] == "generated"


def test_early_stopping_stops_and_keeps_the_best_weights(fake_data, tmp_path, monkeypatch):
    scores = iter([0.3, 0.6, 0.5, 0.4, 0.2, 0.9])
    snapshots = []

    def fake_validate(model, split, device, batch_size=1000):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return 1.0, next(scores)

    monkeypatch.setattr(train_module, "validate", fake_validate)
    config = TrainConfig(epochs=6, batch_size=50, warmup_epochs=0, patience=2, val_size=60)
    result = train_tiny(fake_data, config, out_dir=tmp_path)
    assert result.stopped_early and len(result.history) == 4  # best at 2, two worse epochs, stop
    assert result.best_epoch == 2
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][name])


def test_interrupted_run_resumes_from_its_last_epoch_and_matches(fake_data, quick_train_config, tmp_path, monkeypatch):
    config = quick_train_config.replace(epochs=4)
    whole = train_tiny(fake_data, config, out_dir=tmp_path / "whole")

    real_validate, calls = train_module.validate, []

    def interrupting_validate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train_module, "validate", interrupting_validate)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(fake_data, config, out_dir=tmp_path / "cut")
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2  # the third epoch was lost, no more
    monkeypatch.setattr(train_module, "validate", real_validate)
    resumed = train_tiny(fake_data, config, out_dir=tmp_path / "cut", resume=True)
    assert len(resumed.history) == 4
    for a, b in zip(whole.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_accuracy"] == b["val_accuracy"]
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(value, resumed.model.state_dict()[name])


def test_resume_refuses_a_different_configuration(fake_data, quick_train_config, tmp_path):
    train_tiny(fake_data, quick_train_config.replace(epochs=1), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="another training configuration"):
        train_tiny(fake_data, quick_train_config.replace(momentum=0.5), out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_tiny(fake_data, quick_train_config, out_dir=tmp_path / "empty", resume=True)


def test_nan_validation_loss_stops_and_keeps_the_last_good_epoch(fake_data, quick_train_config, tmp_path, monkeypatch):
    real_validate, calls = train_module.validate, []

    def validate_then_nan(*args, **kwargs):
        calls.append(1)
        loss, accuracy = real_validate(*args, **kwargs)
        return (math.nan if len(calls) == 2 else loss), accuracy

    monkeypatch.setattr(train_module, "validate", validate_then_nan)
    with pytest.raises(
        TrainingDivergedError, match=r"val loss became nan in epoch 2; .*last good epoch \(1\); .*--resume"
    ):
        train_tiny(fake_data, quick_train_config, out_dir=tmp_path)
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["model"].values())
    assert not (tmp_path / "best.pt").exists()


def test_divergence_in_the_first_epoch_says_nothing_was_saved(fake_data, quick_train_config, tmp_path):
    model = build_model(TINY)
    with torch.no_grad():
        model.head.weight.fill_(math.inf)
    with pytest.raises(TrainingDivergedError, match="no epoch finished, so no checkpoint was written"):
        fit(model, fake_data, quick_train_config.replace(grad_clip=0.0), device="cpu", out_dir=tmp_path, progress=False)
    assert not (tmp_path / "last.pt").exists()
    with pytest.raises(TrainingDivergedError, match="nothing was being saved"):
        fit(model, fake_data, quick_train_config.replace(grad_clip=0.0), device="cpu", progress=False)


def test_resume_may_lower_the_learning_rate_and_records_it(fake_data, quick_train_config, tmp_path):
    train_tiny(fake_data, quick_train_config.replace(epochs=1), out_dir=tmp_path)
    payload = load_checkpoint(tmp_path / "last.pt")
    payload["train_config"]["epochs"] = 3  # as if the run had been cut off after its first of three epochs
    from vit_tutorial.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "last.pt", payload)
    lower = quick_train_config.replace(lr=0.01)
    result = train_tiny(fake_data, lower, out_dir=tmp_path, resume=True)
    assert result.info["config_changes"] == [{"from_epoch": 2, "lr": [quick_train_config.lr, 0.01]}]
    assert result.history[1]["lr"] <= 0.01 and result.history[0]["lr"] > result.history[1]["lr"]
    assert load_checkpoint(tmp_path / "best.pt")["config_changes"] == result.info["config_changes"]


def test_a_folder_holding_a_run_is_refused_unless_overwritten(fake_data, quick_train_config, tmp_path):
    config = quick_train_config.replace(epochs=1)
    train_tiny(fake_data, config, out_dir=tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    before = (tmp_path / "best.pt").read_bytes()
    with pytest.raises(CheckpointError, match=r"already holds a run \(last.pt, best.pt, metrics.json\); add --resume"):
        train_tiny(fake_data, config, out_dir=tmp_path)
    assert (tmp_path / "best.pt").read_bytes() == before
    train_tiny(fake_data, config, out_dir=tmp_path, overwrite=True)
    assert not (tmp_path / "metrics.json").exists()  # the old run's metrics went with it


def test_resume_refuses_other_data(fake_data, quick_train_config, tmp_path):
    train_tiny(fake_data, quick_train_config, out_dir=tmp_path / "run")
    (tmp_path / "run" / "best.pt").unlink()  # as if interrupted
    smaller = fake_data.subset(100, 30, 30)
    with pytest.raises(CheckpointError, match=r"trained on other data .*subset"):
        train_tiny(smaller, quick_train_config, out_dir=tmp_path / "run", resume=True)


def test_device_selection_falls_back_to_cpu():
    assert select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert select_device().type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


def test_a_finished_run_is_found_only_with_identical_configs(fake_data, quick_train_config, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "PRETRAINED", tmp_path / "none.pt")
    config = quick_train_config.replace(epochs=1)
    train_tiny(fake_data, config, out_dir=tmp_path / "runs" / "a")
    found = runs.find_finished_run(TINY, config, tmp_path / "runs")
    assert found is not None and found["path"].endswith("best.pt") and len(found["history"]) == 1
    assert runs.find_finished_run(TINY, config.replace(lr=0.2), tmp_path / "runs") is None
    assert runs.find_finished_run(TINY.replace(depth=3), config, tmp_path / "runs") is None


def test_compile_falls_back_to_eager_with_a_warning_off_cuda(fake_data, quick_train_config):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the fallback is for CPU and MPS")
    with pytest.warns(UserWarning, match="CUDA only"):
        result = train_tiny(fake_data, quick_train_config.replace(epochs=1), compile=True)
    assert len(result.history) == 1 and math.isfinite(result.history[0]["train_loss"])


def test_fit_trains_with_mixup_and_cutmix(fake_data, quick_train_config):
    config = quick_train_config.replace(epochs=2, mixup=0.2, cutmix=1.0)
    result = train_tiny(fake_data, config)
    assert all(math.isfinite(h["train_loss"]) for h in result.history)


def test_resume_accepts_a_checkpoint_written_before_new_config_fields(fake_data, quick_train_config, tmp_path):
    config = quick_train_config.replace(epochs=2)
    train_tiny(fake_data, config.replace(epochs=1), out_dir=tmp_path)
    payload = load_checkpoint(tmp_path / "last.pt")
    payload["train_config"] = {k: v for k, v in config.to_dict().items() if k not in ("mixup", "cutmix")}
    from vit_tutorial.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "last.pt", payload)
    resumed = train_tiny(fake_data, config, out_dir=tmp_path, resume=True)
    assert len(resumed.history) == 2


def test_runs_dir_is_the_checkouts_unless_the_environment_names_one(tmp_path, monkeypatch):
    monkeypatch.delenv("VIT_TUTORIAL_RUNS", raising=False)
    checkout = runs.runs_dir().parent
    assert (checkout / "pyproject.toml").is_file() and runs.runs_dir().name == "runs"
    monkeypatch.chdir(tmp_path)  # a notebook's working directory is notebooks/, not the checkout
    assert runs.runs_dir() == checkout / "runs"
    monkeypatch.setenv("VIT_TUTORIAL_RUNS", str(tmp_path / "elsewhere"))
    assert runs.runs_dir() == tmp_path / "elsewhere"


def test_a_run_record_keeps_history_metrics_and_every_prediction_but_no_weights(
    fake_data, quick_train_config, tmp_path
):
    from vit_tutorial.evaluate import predict_logits

    config = quick_train_config.replace(epochs=2)
    result = train_tiny(fake_data, config, out_dir=tmp_path / "run")
    payload = load_checkpoint(tmp_path / "run" / "best.pt")
    record = runs.run_record(payload, result.model, fake_data, note="tiny")
    path = runs.write_run_record(record, "tiny", tmp_path)
    loaded = runs.load_run_record("tiny", tmp_path)
    assert loaded["history"] == result.history and loaded["note"] == "tiny" and "model" not in loaded
    assert torch.equal(loaded["test_predictions"], predict_logits(result.model, fake_data.test).argmax(1))
    assert loaded["test_metrics"]["num_images"] == len(fake_data.test) and path.stat().st_size < 50_000
    assert runs.load_run_record("absent", tmp_path) is None
    path.write_text("{")
    with pytest.raises(CheckpointError, match="not a readable run record"):
        runs.load_run_record("tiny", tmp_path)
