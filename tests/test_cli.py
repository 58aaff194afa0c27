"""The command line end to end on a tiny generated image folder, in a subprocess like a user runs it."""

import json
import os

import pytest
from PIL import Image

from vit_tutorial import cli
from vit_tutorial.checkpoint import save_checkpoint
from vit_tutorial.data import load_data

from .conftest import TINY_ARGS, one_clean_line, payload_of, run, train_args, write_image_folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_image_folder(root / "cifar", per_class=6)
    env = {**os.environ, "VIT_TUTORIAL_CACHE": str(root / "cache"), "VIT_TUTORIAL_DATA": str(root / "cifar")}
    env.pop("VIT_TUTORIAL_DEBUG", None)
    return root, env


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
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


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
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


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
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


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
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


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
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


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
@pytest.mark.parametrize("subset", [-5, 0, 3])
def test_subsets_that_make_no_sense_are_refused(cli_workspace, subset):
    root, env = cli_workspace
    stderr = one_clean_line(run(*train_args(root / "runs" / "s"), "--subset", str(subset), env=env))
    assert "subset must be at least 10" in stderr
    with pytest.raises(ValueError, match="more than the"):
        load_data(root / "cifar", val_size=10, subset=10_000)


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
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


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
def test_predict_works_with_every_registered_model(cli_workspace):
    root, env = cli_workspace
    from vit_tutorial.finetune import FineTunedViT

    model = FineTunedViT()
    path = save_checkpoint(
        root / "vit_b_16.pt",
        payload_of(model, architecture="vit_b_16"),
    )
    image = root / "cifar" / "test" / "cat" / "0000.png"
    predicted = run("predict", str(image), "--checkpoint", str(path), "--top-k", "2", env=env)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.count(",") == 1


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
def test_evaluate_never_destroys_what_it_did_not_write(cli_workspace):
    root, env = cli_workspace
    out = root / "runs" / "e"
    assert run(*train_args(out), env=env).returncode == 0
    checkpoint = (out / "best.pt").read_bytes()
    stderr = one_clean_line(
        run("evaluate", "--checkpoint", str(out / "best.pt"), "--metrics", str(out / "best.pt"), env=env)
    )
    assert "is not a metrics file; it is left alone" in stderr and (out / "best.pt").read_bytes() == checkpoint
    own = json.loads((out / "metrics.json").read_text())
    last = run("evaluate", "--checkpoint", str(out / "last.pt"), env=env)
    assert last.returncode == 0, last.stderr
    assert json.loads((out / "metrics.json").read_text()) == own  # the run's own metrics stay
    scored = json.loads((out / "metrics-last.json").read_text())
    assert scored["checkpoint"] == "last.pt" and "hardware" in scored and "best_epoch" in scored
    assert own["best_epoch"] >= 1 and "hardware" in own
    subset = run("evaluate", "--checkpoint", str(out / "best.pt"), "--subset", "80", env=env)
    assert subset.returncode == 0 and (out / "metrics-subset-10.json").is_file()  # 10 test images exist
    assert json.loads((out / "metrics-subset-10.json").read_text())["num_images"] == 10
    assert run(*train_args(out, "--overwrite"), env=env).returncode == 0
    assert not list(out.glob("metrics-*.json"))  # the old model's metrics went with it


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
def test_evaluate_with_test_time_views_writes_its_own_metrics(cli_workspace):
    root, env = cli_workspace
    out = root / "runs" / "t"
    assert run(*train_args(out), env=env).returncode == 0
    own = (out / "metrics.json").read_text()
    viewed = run("evaluate", "--checkpoint", str(out / "best.pt"), "--tta", env=env)
    assert viewed.returncode == 0 and "mean of 6 test-time views" in viewed.stdout, viewed.stderr
    assert json.loads((out / "metrics-tta.json").read_text())["tta"] is True
    assert (out / "metrics.json").read_text() == own  # the single view's metrics stay
    stderr = one_clean_line(
        run("evaluate", "--checkpoint", str(out / "best.pt"), "--tta", "--metrics", str(out / "metrics.json"), env=env)
    )
    assert "measured without test-time views" in stderr and (out / "metrics.json").read_text() == own


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
def test_mistakes_on_the_command_line_are_one_line_with_a_hint(cli_workspace):
    root, env = cli_workspace
    stderr = one_clean_line(run("train", "--epochs", "many", env=env))
    assert "invalid int value: 'many'" in stderr and "see `vit-tutorial train --help`" in stderr
    assert "usage:" not in stderr
    stderr = one_clean_line(run("train", "--lr", "inf", "--out", str(root / "x"), env=env))
    assert "TrainConfig.lr must be a finite number" in stderr
    stderr = one_clean_line(run("train", "--seed", str(2**64), "--out", str(root / "x"), env=env))
    assert "seed must be at most" in stderr
    debug = {**env, "VIT_TUTORIAL_DEBUG": "0"}  # 0 means off
    assert "Traceback" not in run("train", "--heads", "3", "--out", str(root / "x"), env=debug).stderr
    debug["VIT_TUTORIAL_DEBUG"] = "1"
    assert "Traceback" in run("train", "--heads", "3", "--out", str(root / "x"), env=debug).stderr


def test_every_option_of_every_config_has_its_help():
    import dataclasses

    from vit_tutorial.config import FineTuneConfig, TrainConfig, ViTConfig, help_of

    for cls in (ViTConfig, TrainConfig, FineTuneConfig):
        for field in dataclasses.fields(cls):
            assert help_of(field), f"{cls.__name__}.{field.name} has no help"
    # the option listings, below the usage block (which names every flag too, wrapped to the terminal's width)
    text = "".join(run(command, "--help").stdout.split("options:", 1)[1] for command in ("train", "finetune"))
    for flag, words in (
        ("--ema", "moving average"),
        ("--trainable-blocks", "train the last N"),
        ("--qk-decay", "query"),
    ):
        assert words in text.split(flag, 1)[1][:400], flag


def _wait_until_it_catches(pid: int, signum: int, timeout: float = 30.0) -> None:
    """Wait until process `pid` has a handler for `signum` (its caught-signal mask in /proc), instead of guessing
    how long a loaded machine takes to start Python."""
    import time
    from pathlib import Path

    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("needs /proc to see the process's signal handlers")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        caught = next(line for line in status.read_text().splitlines() if line.startswith("SigCgt:"))
        if int(caught.split()[1], 16) >> (signum - 1) & 1:
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} installed no handler for signal {signum} within {timeout} s")


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_while_the_command_is_still_starting_is_one_line(cli_workspace, name, code):
    """Importing torch takes seconds; a signal in that time ends the command at once, with one line."""
    import signal
    import subprocess
    import sys

    root, env = cli_workspace
    process = subprocess.Popen(
        [sys.executable, "-m", "vit_tutorial", *train_args(root / "run")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_until_it_catches(process.pid, signal.SIGTERM)  # the entry point's handlers, installed before any import
    process.send_signal(getattr(signal, name))  # inside `import torch`, long before the command's own handlers
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, (process.returncode, stderr)
    assert stderr.strip().splitlines() == [
        f"vit-tutorial: stopped by {'Ctrl-C' if code == 130 else name} while starting; nothing was written"
    ]
    assert not (root / "run").exists()


def test_importing_the_package_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, vit_tutorial; print('torch' in sys.modules); vit_tutorial.ViT; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
