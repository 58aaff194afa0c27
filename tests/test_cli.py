"""The command line end to end on a tiny generated image folder, in a subprocess like a user runs it."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import write_image_folder


def run(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "vit_tutorial", *args], capture_output=True, text=True, env=env, cwd=cwd, check=False
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_image_folder(root / "cifar", per_class=6)
    env = {**os.environ, "VIT_TUTORIAL_CACHE": str(root / "cache"), "VIT_TUTORIAL_DATA": str(root / "cifar")}
    env.pop("VIT_TUTORIAL_DEBUG", None)
    return root, env


TINY_ARGS = ["--dim", "16", "--depth", "2", "--heads", "2", "--mlp-dim", "32", "--batch-size", "10", "--val-size", "10"]


def test_train_evaluate_predict_end_to_end(workspace):
    root, env = workspace
    out = root / "run"
    trained = run("train", "--out", str(out), "--epochs", "2", "--warmup-epochs", "1", *TINY_ARGS, env=env)
    assert trained.returncode == 0, trained.stderr
    assert "epoch 2/2" in trained.stderr  # the tqdm progress bar
    assert {"last.pt", "best.pt", "history.json", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert json.loads((out / "metrics.json").read_text())["provenance"]["source"] == "image-folder"

    resumed = run("train", "--out", str(out), "--epochs", "3", "--warmup-epochs", "1", "--resume", *TINY_ARGS, env=env)
    assert resumed.returncode == 2 and "another training configuration" in resumed.stderr  # epochs changed

    evaluated = run("evaluate", "--checkpoint", str(out / "best.pt"), env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "test accuracy" in evaluated.stdout and (out / "metrics.json").is_file()

    image = root / "cifar" / "test" / "cat" / "0000.png"
    predicted = run("predict", str(image), "--checkpoint", str(out / "best.pt"), "--top-k", "3", env=env)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.count(",") == 2


def test_resnet_baseline_and_fine_tuning_commands(workspace):
    root, env = workspace
    out = root / "resnet"
    common = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "10", "--val-size", "10", "--no-progress"]
    trained = run("train", "--model", "resnet", "--out", str(out), *common, env=env)
    assert trained.returncode == 0, trained.stderr
    evaluated = run("evaluate", "--model", "resnet", "--checkpoint", str(out / "best.pt"), env=env)
    assert evaluated.returncode == 0 and "test accuracy" in evaluated.stdout, evaluated.stderr
    mismatch = run("evaluate", "--model", "vit", "--checkpoint", str(out / "best.pt"), env=env)
    assert mismatch.returncode == 2 and "holds a resnet model, not --model vit" in mismatch.stderr
    shaped = run("train", "--model", "resnet", "--dim", "64", env=env)
    assert shaped.returncode == 2 and "--dim: ViT options" in shaped.stderr

    tuned = run(
        "finetune",
        "--weights",
        "random",
        "--trainable-blocks",
        "0",
        "--subset",
        "10",
        "--out",
        str(root / "tuned"),
        *common,
        env=env,
    )
    assert tuned.returncode == 0, tuned.stderr
    assert "random weights" in tuned.stderr
    assert "adamw" in (root / "tuned" / "best.pt").read_bytes().decode("latin-1")


def test_errors_are_one_line_without_traceback(workspace, tmp_path):
    _, env = workspace
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    (tmp_path / "notes.txt").write_text("hi")
    cases = [
        (
            ("predict", str(tmp_path / "notes.txt"), "--checkpoint", str(tmp_path / "bad.pt")),
            "not a readable checkpoint",
        ),
        (("train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")), "CIFAR-10 not found"),
        (("train", "--heads", "3", "--out", str(tmp_path / "o")), "not divisible by heads"),
        (("evaluate", "--checkpoint", str(tmp_path / "missing.pt")), "no checkpoint at"),
    ]
    for args, message in cases:
        result = run(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_every_command_has_help():
    for command in ("train", "evaluate", "predict"):
        result = run(command, "--help")
        assert result.returncode == 0 and "usage: vit-tutorial" in result.stdout
    assert "--patch-size" in run("train", "--help").stdout
