import os

import pytest
import torch

from vit_tutorial import CheckpointError, ViT
from vit_tutorial.checkpoint import load_checkpoint, load_model, save_checkpoint
from vit_tutorial.config import RunOptions
from vit_tutorial.pretrained import PRETRAINED, load_pretrained
from vit_tutorial.record import EpochEntry

from .conftest import ENTRY, TINY, payload_of


def _save(path, model):
    return save_checkpoint(path, payload_of(model, history=[ENTRY]))


def test_round_trip_restores_identical_predictions(tmp_path):
    model = ViT(TINY).eval()
    _save(tmp_path / "m.pt", model)
    loaded = load_model(tmp_path / "m.pt")
    assert not loaded.training and loaded.config == TINY
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(images), model(images))
    payload = load_checkpoint(tmp_path / "m.pt")
    assert payload["version"] and payload["history"] == [ENTRY]
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_gives_one_clear_line(tmp_path, damage):
    path = _save(tmp_path / "m.pt", ViT(TINY))
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 50, "empty": b""}[damage])
    with pytest.raises(CheckpointError) as error:
        load_model(path)
    assert "\n" not in str(error.value) and "not a readable checkpoint" in str(error.value)


def test_missing_and_foreign_checkpoints_are_explained(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_model(tmp_path / "none.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a vit_tutorial checkpoint"):
        load_model(tmp_path / "other.pt")


def test_mismatched_weights_are_refused(tmp_path):
    model = ViT(TINY)
    save_checkpoint(tmp_path / "m.pt", payload_of(model, TINY.replace(depth=3)))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(tmp_path / "m.pt")


def test_loading_never_runs_pickled_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "vit_tutorial.checkpoint/1", "model": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_load_pretrained_explains_when_no_checkpoint_is_shipped(monkeypatch, tmp_path):
    from vit_tutorial import pretrained

    monkeypatch.setattr(pretrained, "PRETRAINED", tmp_path / "absent.pt")
    assert not pretrained.pretrained_available()
    with pytest.raises(CheckpointError, match="ships no pretrained checkpoint"):
        pretrained.load_pretrained()
    model = ViT(TINY)
    _save(tmp_path / "absent.pt", model)
    loaded = pretrained.load_pretrained()
    assert not loaded.training and next(loaded.parameters()).device.type == "cpu"
    assert pretrained.pretrained_record().history == [EpochEntry(**ENTRY)]


def test_ship_pretrained_keeps_the_record_and_never_loses_the_shipped_file(tmp_path, monkeypatch, fake_data):
    import importlib.util
    import json
    from pathlib import Path

    from vit_tutorial import TrainConfig, pretrained
    from vit_tutorial.evaluate import evaluate
    from vit_tutorial.registry import build_model
    from vit_tutorial.train import fit

    spec = importlib.util.spec_from_file_location("ship", Path(__file__).parents[1] / "tools" / "ship_pretrained.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    shipped = tmp_path / "pretrained" / "vit_cifar10.pt"
    monkeypatch.setattr(ship, "PRETRAINED", shipped)
    monkeypatch.setattr(pretrained, "PRETRAINED", shipped)
    config = TrainConfig(epochs=1, batch_size=50, warmup_epochs=0, val_size=60)
    result = fit(
        build_model(TINY), fake_data, config, out_dir=tmp_path / "run", options=RunOptions(device="cpu", progress=False)
    )
    metrics = {**evaluate(result.model, fake_data.test), "provenance": fake_data.provenance}
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="measured on 60 images"):
        ship.ship(tmp_path / "run", "")  # a full test-set score is required
    metrics["num_images"] = 10_000
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(metrics))
    ship.ship(tmp_path / "run", "a tiny run")
    info = pretrained.pretrained_record()
    assert info.architecture == "vit" and info.note == "a tiny run" and "root" not in info.provenance
    assert info.history == result.history and info.test_metrics["num_images"] == 10_000
    # a warm start ships its starting checkpoint by file name, not by a path on the machine that trained it
    warm = config.replace(init_from=str(tmp_path / "run" / "best.pt"))
    fit(build_model(TINY), fake_data, warm, out_dir=tmp_path / "warm", options=RunOptions(device="cpu", progress=False))
    (tmp_path / "warm" / "metrics.json").write_text(json.dumps(metrics))
    ship.ship(tmp_path / "warm", "a warm start")
    info = pretrained.pretrained_record()
    assert info.train_config.init_from == "best.pt" and info.started_from["checkpoint"] == "best.pt"
    before = shipped.read_bytes()
    monkeypatch.setattr(ship, "LIMIT", 1000)
    with pytest.raises(ValueError, match="over the 1,000 limit; the shipped one is unchanged"):
        ship.ship(tmp_path / "run", "too big")
    assert shipped.read_bytes() == before and not list(shipped.parent.glob("*.staged"))


def test_damaged_bytes_are_caught_by_the_checksum(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", payload_of(ViT(TINY)))
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start : start + 4096] = os.urandom(4096)  # 4 KB overwritten inside the weights
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"damaged|not a readable checkpoint"):
        load_model(path)


def test_a_checkpoint_whose_weights_were_replaced_but_still_unpickle_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", payload_of(ViT(TINY)))
    payload = torch.load(path, weights_only=True)
    payload["model"]["head.weight"] = torch.full_like(payload["model"]["head.weight"], float("nan"))
    torch.save(payload, path)  # structurally valid, checksum now stale
    with pytest.raises(CheckpointError, match="is damaged: its content does not match the checksum"):
        load_model(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["model_config"].update(num_classes=100), "100-class model"),
        (lambda p: p["model_config"].update(dim="128"), r"model configuration is invalid .*dim must be int"),
        (lambda p: p.update(history="none"), "field 'history' should be list, found str"),
        (lambda p: p.update(best_epoch=True), "field 'best_epoch' should be int, found bool"),
        (lambda p: p["model"].update({"head.bias": [0.0] * 10}), "'head.bias' is not a tensor"),
    ],
)
def test_structurally_valid_but_wrong_checkpoints_are_refused(tmp_path, change, message):
    model = ViT(TINY)
    payload = payload_of(model, history=[], best_epoch=1)
    change(payload)
    path = save_checkpoint(tmp_path / "m.pt", payload)  # a valid checksum over wrong content
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_a_checkpoint_without_its_checksum_is_refused_and_the_shipped_one_loads(tmp_path):
    model = ViT(TINY)
    torch.save({"format": "vit_tutorial.checkpoint/1", "version": "0.1.0", **payload_of(model)}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="lacks \\['content_sha256'\\]"):
        load_model(tmp_path / "old.pt")
    if PRETRAINED.is_file():
        load_pretrained()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p.update(train_config={"val_size": "5000"}),
            r"training configuration is invalid .*val_size must be int",
        ),
        (lambda p: p.update(train_config={"seed": 1.5}), r"training configuration is invalid .*seed must be int"),
        (lambda p: p["model"]["head.weight"].fill_(float("nan")), r"'head.weight' holds NaN or infinite values"),
        (lambda p: p["model"]["head.bias"].fill_(float("inf")), r"'head.bias' holds NaN or infinite values"),
    ],
)
def test_a_checkpoint_with_a_valid_checksum_but_bad_content_fails_early_in_one_line(tmp_path, change, message):
    payload = payload_of(ViT(TINY))
    change(payload)
    path = save_checkpoint(tmp_path / "m.pt", payload)  # the checksum is of the bad content: it matches
    with pytest.raises(CheckpointError, match=message):
        load_model(path)
