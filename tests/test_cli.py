"""The command line end to end on a tiny generated image folder, in a subprocess like a user runs it."""

import json
import os

import pytest
from PIL import Image

from vit_tutorial import cli
from vit_tutorial.checkpoint import save_checkpoint
from vit_tutorial.data import load_data

from .conftest import TINY_ARGS, one_clean_line, run, train_args, write_image_folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_image_folder(root / "cifar", per_class=6)
    env = {**os.environ, "VIT_TUTORIAL_CACHE": str(root / "cache"), "VIT_TUTORIAL_DATA": str(root / "cifar")}
    env.pop("VIT_TUTORIAL_DEBUG", None)
    return root, env


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


def test_output_paths_that_cannot_be_written_give_one_line(cli_workspace):
    root, env = cli_workspace
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


@pytest.mark.parametrize("device", ["foo", "cuda:7", "tpu"])
def test_unknown_devices_are_named(cli_workspace, device):
    root, env = cli_workspace
    stderr = one_clean_line(run(*train_args(root / "runs" / "d"), "--device", device, env=env))
    assert device in stderr


def test_ctrl_c_during_decoding_or_the_final_evaluation_is_one_line(cli_workspace, monkeypatch, capsys):
    root, env = cli_workspace
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
    assert cli.main(list(train_args(root / "runs" / "k"))) == 130  # Ctrl-C exits 130, as the README says
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "interrupted during the test evaluation" in err and "evaluate --checkpoint" in err
    assert (root / "runs" / "k" / "best.pt").is_file() and (root / "runs" / "k" / "history.json").is_file()


@pytest.mark.parametrize("subset", [-5, 0, 3])
def test_subsets_that_make_no_sense_are_refused(cli_workspace, subset):
    root, env = cli_workspace
    stderr = one_clean_line(run(*train_args(root / "runs" / "s"), "--subset", str(subset), env=env))
    assert "subset must be at least 10" in stderr
    with pytest.raises(ValueError, match="more than the"):
        load_data(root / "cifar", val_size=10, subset=10_000)


def test_evaluate_on_a_subset_never_replaces_the_runs_own_metrics(cli_workspace):
    root, env = cli_workspace
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


def test_predict_works_with_every_registered_model(cli_workspace):
    root, env = cli_workspace
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
