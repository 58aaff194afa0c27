"""Bad input and faults, one test (or more) per class of failure: each ends as one clean line and loses nothing."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from vit_tutorial import CheckpointError, ImageError, ViT, cli
from vit_tutorial.checkpoint import load_model, save_checkpoint
from vit_tutorial.data import load_cifar10, load_data
from vit_tutorial.predict import load_image
from vit_tutorial.pretrained import PRETRAINED, load_pretrained

from .conftest import TINY, write_image_folder
from .test_cli import TINY_ARGS, run


@pytest.fixture
def workspace(tmp_path):
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
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def train_args(out, *extra):
    return ("train", "--out", str(out), "--epochs", "1", "--warmup-epochs", "0", "--no-progress", *TINY_ARGS, *extra)


# 1. Exceptions that used to escape as tracebacks ---------------------------------------------------------------


@pytest.fixture
def bomb(tmp_path, monkeypatch):
    """A PNG over twice Pillow's pixel limit (the limit is lowered here, so the file stays small)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    return path


def test_a_decompression_bomb_is_refused_in_prediction_and_in_a_training_folder(bomb, tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="too large to open safely"):
        load_image(bomb)
    root = write_image_folder(tmp_path / "cifar", per_class=2)
    (root / "train" / "cat" / "0000.png").write_bytes(bomb.read_bytes())
    monkeypatch.setenv("VIT_TUTORIAL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ImageError, match=r"cat/0000.png is too large .*remove or replace this file"):
        load_cifar10(root, val_size=2)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing array", "wrong shape"])
def test_a_damaged_decoded_cache_is_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("VIT_TUTORIAL_CACHE", str(tmp_path / "cache"))
    root = write_image_folder(tmp_path / "cifar", per_class=2)
    first = load_cifar10(root, val_size=2)
    (cache,) = (tmp_path / "cache").glob("*.npz")
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:300])
    elif damage == "garbage":
        cache.write_bytes(b"PK\x03\x04" + b"x" * 100)
    else:
        with np.load(cache) as stored:
            arrays = {k: stored[k] for k in stored.files}
        if damage == "missing array":
            del arrays["test_labels"]
        else:
            arrays["train_images"] = arrays["train_images"][:, :16]
        np.savez(cache, **arrays)
    again = load_cifar10(root, val_size=2)
    assert torch.equal(again.train.images, first.train.images) and torch.equal(again.test.labels, first.test.labels)
    with np.load(cache) as stored:  # and the cache is sound again
        assert stored["train_images"].shape == (20, 32, 32, 3)


def test_output_paths_that_cannot_be_written_give_one_line(workspace):
    root, env = workspace
    (root / "a_file").write_text("in the way")
    stderr = one_clean_line(run(*train_args(root / "a_file" / "run"), env=env))
    assert "cannot write" in stderr and "a_file" in stderr
    trained = run(*train_args(root / "runs" / "ok"), env=env)
    assert trained.returncode == 0, trained.stderr
    (root / "a_dir").mkdir()
    stderr = one_clean_line(
        run(
            "evaluate", "--checkpoint", str(root / "runs" / "ok" / "best.pt"), "--metrics", str(root / "a_dir"), env=env
        )
    )
    assert "cannot write" in stderr


def test_a_full_disk_while_checkpointing_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", {"model_config": TINY.to_dict(), "model": ViT(TINY).state_dict()})
    before = path.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(path, {"model_config": TINY.to_dict(), "model": ViT(TINY).state_dict()})
    assert path.read_bytes() == before and not list(tmp_path.glob("*.partial"))


def test_ctrl_c_while_writing_a_checkpoint_leaves_the_old_file_and_no_partial(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", {"model_config": TINY.to_dict(), "model": ViT(TINY).state_dict()})
    before = path.read_bytes()
    real_save = torch.save

    def interrupted(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model_config": TINY.to_dict(), "model": ViT(TINY).state_dict()})
    assert path.read_bytes() == before and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("device", ["foo", "cuda:7", "tpu"])
def test_unknown_devices_are_named(workspace, device):
    root, env = workspace
    stderr = one_clean_line(run(*train_args(root / "runs" / "d"), "--device", device, env=env))
    assert device in stderr


def test_ctrl_c_during_decoding_or_the_final_evaluation_is_one_line(workspace, monkeypatch, capsys):
    root, env = workspace
    monkeypatch.setenv("VIT_TUTORIAL_CACHE", env["VIT_TUTORIAL_CACHE"])
    monkeypatch.setenv("VIT_TUTORIAL_DATA", env["VIT_TUTORIAL_DATA"])
    from vit_tutorial import data as data_module

    calls = []

    def interrupt_on_the_fifth(path):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return Image.open(path).convert("RGB")

    monkeypatch.setattr(data_module, "read_rgb", interrupt_on_the_fifth)
    assert cli.main(list(train_args(root / "runs" / "k"))) == 130
    assert "interrupted" in capsys.readouterr().err and not list((root / "cache").glob("*.npz"))
    monkeypatch.undo()
    monkeypatch.setenv("VIT_TUTORIAL_CACHE", env["VIT_TUTORIAL_CACHE"])
    monkeypatch.setenv("VIT_TUTORIAL_DATA", env["VIT_TUTORIAL_DATA"])
    from vit_tutorial import evaluate as evaluate_module

    def interrupted_evaluation(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "evaluate", interrupted_evaluation)
    assert cli.main(list(train_args(root / "runs" / "k"))) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "interrupted during the test evaluation" in err and "evaluate --checkpoint" in err
    assert (root / "runs" / "k" / "best.pt").is_file() and (root / "runs" / "k" / "history.json").is_file()


# 2. Checkpoints that load but are wrong --------------------------------------------------------------------------


def test_damaged_bytes_are_caught_by_the_checksum(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", {"model_config": TINY.to_dict(), "model": ViT(TINY).state_dict()})
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start : start + 4096] = os.urandom(4096)  # 4 KB overwritten inside the weights
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"damaged|not a readable checkpoint"):
        load_model(path)


def test_a_checkpoint_whose_weights_were_replaced_but_still_unpickle_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", {"model_config": TINY.to_dict(), "model": ViT(TINY).state_dict()})
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
    payload = {"model_config": TINY.to_dict(), "model": model.state_dict(), "history": [], "best_epoch": 1}
    change(payload)
    path = save_checkpoint(tmp_path / "m.pt", payload)  # a valid checksum over wrong content
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_checkpoints_written_before_the_checksum_still_load(tmp_path):
    model = ViT(TINY)
    torch.save(
        {
            "format": "vit_tutorial.checkpoint/1",
            "version": "0.1.0",
            "model_config": TINY.to_dict(),
            "model": model.state_dict(),
        },
        tmp_path / "old.pt",
    )
    assert "content_sha256" not in torch.load(tmp_path / "old.pt", weights_only=True)
    load_model(tmp_path / "old.pt")
    if PRETRAINED.is_file():
        load_pretrained()


# 3. Silent wrong answers ----------------------------------------------------------------------------------------


def test_a_16_bit_greyscale_png_keeps_its_brightness(tmp_path):
    values = np.full((40, 40), 32768, dtype=np.uint16)  # half of full scale
    Image.fromarray(values).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    image = load_image(tmp_path / "grey16.png")
    assert torch.allclose(image, torch.full_like(image, 128 / 255), atol=1 / 255)


@pytest.mark.parametrize("subset", [-5, 0, 3])
def test_subsets_that_make_no_sense_are_refused(workspace, subset):
    root, env = workspace
    stderr = one_clean_line(run(*train_args(root / "runs" / "s"), "--subset", str(subset), env=env))
    assert "subset must be at least 10" in stderr
    with pytest.raises(ValueError, match="more than the"):
        load_data(root / "cifar", val_size=10, subset=10_000)


# 5. Losing a finished result ------------------------------------------------------------------------------------


def test_retraining_into_a_finished_run_needs_overwrite(workspace):
    root, env = workspace
    out = root / "runs" / "f"
    assert run(*train_args(out), env=env).returncode == 0
    before = (out / "best.pt").read_bytes()
    stderr = one_clean_line(run(*train_args(out), env=env))
    assert "already holds a run" in stderr and (out / "best.pt").read_bytes() == before
    assert run(*train_args(out, "--overwrite"), env=env).returncode == 0


def test_evaluate_on_a_subset_never_replaces_the_runs_own_metrics(workspace):
    root, env = workspace
    out = root / "runs" / "m"
    assert run(*train_args(out), env=env).returncode == 0
    own = (out / "metrics.json").read_text()
    subset = run("evaluate", "--checkpoint", str(out / "best.pt"), "--subset", "20", env=env)
    assert subset.returncode == 0, subset.stderr
    assert (out / "metrics.json").read_text() == own and (out / "metrics-subset-4.json").is_file()
    full = run("evaluate", "--checkpoint", str(out / "best.pt"), env=env)  # the same data: a refresh is fine
    assert full.returncode == 0, full.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["provenance"]["description"] = "CIFAR-10, original (torchvision)"
    metrics["provenance"]["source"] = "torchvision"
    (out / "metrics.json").write_text(json.dumps(metrics))
    stderr = one_clean_line(run("evaluate", "--checkpoint", str(out / "best.pt"), env=env))
    assert "holds metrics measured on other data" in stderr and "--metrics PATH" in stderr


def test_runs_go_where_vit_tutorial_runs_says(workspace):
    root, env = workspace
    result = run("train", "--epochs", "1", "--warmup-epochs", "0", "--no-progress", *TINY_ARGS, env=env)
    assert result.returncode == 0, result.stderr
    assert (root / "runs" / "vit" / "best.pt").is_file()
    evaluated = run("evaluate", env=env)
    assert evaluated.returncode == 0 and str(root / "runs" / "vit") in evaluated.stdout


# Code health -----------------------------------------------------------------------------------------------------


def test_predict_works_with_every_registered_model(workspace):
    root, env = workspace
    from vit_tutorial.finetune import FineTunedViT

    model = FineTunedViT()
    path = save_checkpoint(
        root / "vit_b_16.pt",
        {"architecture": "vit_b_16", "model_config": model.config.to_dict(), "model": model.state_dict()},
    )
    image = root / "cifar" / "test" / "cat" / "0000.png"
    predicted = run("predict", str(image), "--checkpoint", str(path), "--top-k", "2", env=env)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.count(",") == 1


def test_loading_the_small_vit_does_not_import_the_vit_b_16_code():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vit_tutorial.pretrained import load_pretrained, pretrained_available\n"
        "model = load_pretrained() if pretrained_available() else None\n"
        "print('vit_tutorial.finetune' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "False", result.stderr


def test_one_version_everywhere():
    from importlib.metadata import version

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from pathlib import Path

    import vit_tutorial

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert version("vit-tutorial") == vit_tutorial.__version__
