"""Run folders and records: one writer at a time, resume only what fits, reuse finished runs, ship records."""

import json

import pytest
import torch

from vit_tutorial import CheckpointError, pretrained, records, run_folder, runs
from vit_tutorial.checkpoint import load_checkpoint, save_checkpoint
from vit_tutorial.config import RunOptions

from .conftest import TINY, TINY_ARGS, one_clean_line, run, train_args, train_tiny


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


def test_resume_refuses_a_different_configuration(fake_data, quick_train_config, tmp_path):
    train_tiny(fake_data, quick_train_config.replace(epochs=1), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="another training configuration"):
        train_tiny(fake_data, quick_train_config.replace(momentum=0.5), out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_tiny(fake_data, quick_train_config, out_dir=tmp_path / "empty", resume=True)


def test_a_finished_run_is_found_only_with_identical_configs(fake_data, quick_train_config, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "PRETRAINED", tmp_path / "none.pt")
    config = quick_train_config.replace(epochs=1)
    train_tiny(fake_data, config, out_dir=tmp_path / "runs" / "a")
    found = records.find_finished_run(TINY, config, tmp_path / "runs")
    assert found is not None and found.path.name == "best.pt" and len(found.history) == 1
    assert records.find_finished_run(TINY, config.replace(lr=0.2), tmp_path / "runs") is None
    assert records.find_finished_run(TINY.replace(depth=3), config, tmp_path / "runs") is None


def test_runs_dir_is_the_checkouts_unless_the_environment_names_one(tmp_path, monkeypatch):
    monkeypatch.delenv("VIT_TUTORIAL_RUNS", raising=False)
    checkout = run_folder.runs_dir().parent
    assert (checkout / "pyproject.toml").is_file() and run_folder.runs_dir().name == "runs"
    monkeypatch.chdir(tmp_path)  # a notebook's working directory is notebooks/, not the checkout
    assert run_folder.runs_dir() == checkout / "runs"
    monkeypatch.setenv("VIT_TUTORIAL_RUNS", str(tmp_path / "elsewhere"))
    assert run_folder.runs_dir() == tmp_path / "elsewhere"


def test_a_run_record_keeps_history_metrics_and_every_prediction_but_no_weights(
    fake_data, quick_train_config, tmp_path
):
    from vit_tutorial.evaluate import predict_logits

    config = quick_train_config.replace(epochs=2)
    result = train_tiny(fake_data, config, out_dir=tmp_path / "run")
    payload = load_checkpoint(tmp_path / "run" / "best.pt")
    record = records.run_record(payload, result.model, fake_data, note="tiny")
    path = records.write_run_record(record, "tiny", tmp_path)
    loaded = records.load_run_record("tiny", tmp_path)
    assert loaded.history == result.history and loaded.record.note == "tiny" and loaded.model is None
    assert "model" not in json.loads(path.read_text())
    assert torch.equal(loaded.test_predictions, predict_logits(result.model, fake_data.test).argmax(1))
    assert loaded.record.test_metrics["num_images"] == len(fake_data.test) and path.stat().st_size < 50_000
    assert records.load_run_record("absent", tmp_path) is None
    path.write_text("{")
    with pytest.raises(CheckpointError, match="not a readable run record"):
        records.load_run_record("tiny", tmp_path)


def test_a_run_that_predates_the_diagnostics_gets_those_of_its_kept_weights(fake_data, quick_train_config, tmp_path):
    from vit_tutorial.attention_maps import attend, cls_spread
    from vit_tutorial.diagnostics import PROBE_IMAGES, qk_norms

    result = train_tiny(fake_data, quick_train_config.replace(epochs=2), out_dir=tmp_path / "run")
    payload = load_checkpoint(tmp_path / "run" / "best.pt")
    recorded = payload["history"][payload["best_epoch"] - 1]
    payload["history"] = [
        {k: v for k, v in h.items() if k not in ("qk_norms", "cls_spread")} for h in payload["history"]
    ]
    best = records.run_record(payload, result.model, fake_data)["history"][payload["best_epoch"] - 1]
    assert best["measured_after_training"] is True and best["qk_norms"] == qk_norms(result.model)
    # measured in float32 (the run measured them in its own precision, bf16 on this CPU)
    spread = cls_spread(attend(result.model, fake_data.val.images[:PROBE_IMAGES])[1]).tolist()
    assert best["cls_spread"] == pytest.approx(spread, abs=1e-6)
    assert best["cls_spread"] == pytest.approx(recorded["cls_spread"], rel=0.3)
    # a run that recorded them keeps its own, unmarked
    kept = records.run_record(load_checkpoint(tmp_path / "run" / "best.pt"), result.model, fake_data)
    assert "measured_after_training" not in kept["history"][payload["best_epoch"] - 1]


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
def test_retraining_into_a_finished_run_needs_overwrite(cli_workspace):
    root, env = cli_workspace
    out = root / "runs" / "f"
    assert run(*train_args(out), env=env).returncode == 0
    before = (out / "best.pt").read_bytes()
    stderr = one_clean_line(run(*train_args(out), env=env))
    assert "already holds a run" in stderr and (out / "best.pt").read_bytes() == before
    assert run(*train_args(out, "--overwrite"), env=env).returncode == 0


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
def test_runs_go_where_vit_tutorial_runs_says(cli_workspace):
    root, env = cli_workspace
    result = run("train", "--epochs", "1", "--warmup-epochs", "0", "--no-progress", *TINY_ARGS, env=env)
    assert result.returncode == 0, result.stderr
    assert (root / "runs" / "vit" / "best.pt").is_file()
    evaluated = run("evaluate", env=env)
    assert evaluated.returncode == 0 and str(root / "runs" / "vit") in evaluated.stdout


def _start(args, env):
    """The command line in the background, as a second terminal would run it."""
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "vit_tutorial", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, seconds=120.0):
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


@pytest.mark.slow
def test_a_second_writer_is_refused_while_a_run_trains_and_sigterm_ends_it_as_ctrl_c_does(cli_workspace):
    import signal

    root, env = cli_workspace
    out = root / "runs" / "busy"

    def second_writers(first):
        for extra in ((), ("--resume",), ("--overwrite",)):
            stderr = one_clean_line(run(*train_args(out, "--epochs", "100000", "--patience", "0", *extra), env=env))
            assert f"is in use by process {first.pid}" in stderr and "choose another --out" in stderr

    returncode, stderr = _signal_a_training_run(out, env, signal.SIGTERM, before=second_writers)
    assert returncode == 143, stderr
    message = stderr.strip().splitlines()[-1]
    assert "interrupted; finished epochs are saved in" in message and "--resume" in message
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.partial"))
    kept = load_checkpoint(out / "last.pt")["epochs_run"]
    assert kept >= 1 and not (out / "best.pt").exists()
    resumed = run(*train_args(out, "--epochs", str(kept + 1), "--patience", "0", "--resume"), env=env)
    assert "another training configuration (epochs differ)" in resumed.stderr  # the lock is free again
    again = _start(train_args(out, "--epochs", "100000", "--patience", "0", "--resume"), env)
    try:
        _wait_for(lambda: load_checkpoint(out / "last.pt")["epochs_run"] > kept)
    finally:
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=120)
    assert again.returncode == 130


@pytest.mark.slow
def test_sighup_from_a_closing_terminal_ends_a_run_as_sigterm_does(cli_workspace):
    import signal

    root, env = cli_workspace
    out = root / "runs" / "hup"
    returncode, stderr = _signal_a_training_run(out, env, signal.SIGHUP)
    assert returncode == 129, stderr
    assert stderr.strip().splitlines()[-1].startswith("vit-tutorial train: interrupted; finished epochs are saved")
    assert load_checkpoint(out / "last.pt")["epochs_run"] >= 1 and not list(out.glob("*.partial"))


def _signal_a_training_run(out, env, signum, before=lambda process: None):
    """Start a long run into `out`, wait for its first saved epoch, call `before`, send `signum`; its exit
    status and stderr."""
    process = _start(train_args(out, "--epochs", "100000", "--patience", "0"), env)
    try:
        _wait_for(lambda: (out / "last.pt").is_file())
        before(process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    return process.returncode, stderr


def test_a_killed_run_never_blocks_the_next(fake_data, quick_train_config, tmp_path):
    """The lock is the kernel's (flock), not a file's existence: a lock file left behind by a process that
    died is no lock."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text("process 1 (a run: vit-tutorial train, since 2026-01-01 00:00:00)")
    result = train_tiny(fake_data, quick_train_config.replace(epochs=1), out_dir=tmp_path / "run")
    assert len(result.history) == 1


def test_two_writers_of_one_folder_in_one_process_are_refused_too(tmp_path):
    from vit_tutorial.errors import RunInUseError

    with run_folder.locked(tmp_path / "run"), pytest.raises(RunInUseError, match=r"in use by process \d+"):  # noqa: SIM117
        with run_folder.locked(tmp_path / "run"):
            pass
    with run_folder.locked(tmp_path / "run"):  # released when the first writer is done
        pass


@pytest.fixture
def reuse_workspace(tmp_path, monkeypatch):
    """No shipped checkpoint, and runs under tmp_path/runs: what `train_or_reuse` finds is what a test put there."""
    monkeypatch.setattr(pretrained, "PRETRAINED", tmp_path / "none.pt")
    monkeypatch.setenv("VIT_TUTORIAL_RUNS", str(tmp_path / "runs"))
    return tmp_path


CPU = RunOptions(device="cpu", progress=False)


def test_train_or_reuse_trains_when_nothing_matches(fake_data, quick_train_config, reuse_workspace):
    said = []
    trained = runs.train_or_reuse(
        TINY, quick_train_config.replace(epochs=2), fake_data, out_dir="first", log=said.append, options=CPU
    )
    assert trained.model is not None and len(trained.history) == 2 and "trained here" in said[-1]


def test_train_or_reuse_reuses_a_finished_run_of_the_same_configs(fake_data, quick_train_config, reuse_workspace):
    config, said = quick_train_config.replace(epochs=2), []
    train_tiny(fake_data, config, out_dir=reuse_workspace / "runs" / "first")
    again = runs.train_or_reuse(TINY, config, fake_data, out_dir="other", log=said.append)
    assert "reusing" in said[-1] and again.path == reuse_workspace / "runs" / "first" / "best.pt"
    assert again.model is not None and not (reuse_workspace / "runs" / "other").exists()


def test_train_or_reuse_falls_back_to_a_shipped_record(fake_data, quick_train_config, reuse_workspace, monkeypatch):
    config, said = quick_train_config.replace(epochs=2), []
    result = train_tiny(fake_data, config, out_dir=reuse_workspace / "elsewhere")
    payload = load_checkpoint(reuse_workspace / "elsewhere" / "best.pt")
    records.write_run_record(records.run_record(payload, result.model, fake_data, "tiny"), "tiny", reuse_workspace)
    monkeypatch.setattr(records, "RECORDS", reuse_workspace)
    shipped = runs.train_or_reuse(
        TINY, config.replace(lr=0.2), fake_data, out_dir="second", record="tiny", log=said.append
    )
    assert shipped.model is None and shipped.test_predictions is not None and "run record" in said[-1]


def test_train_or_reuse_resumes_an_interrupted_run_of_the_same_configs(fake_data, quick_train_config, reuse_workspace):
    config = quick_train_config.replace(epochs=2, lr=0.2)
    interrupted = reuse_workspace / "runs" / "third"
    train_tiny(fake_data, config.replace(epochs=1), out_dir=interrupted)
    (interrupted / "best.pt").unlink()
    last = load_checkpoint(interrupted / "last.pt")
    last["train_config"]["epochs"] = 2  # as if cut off after the first of two epochs
    save_checkpoint(interrupted / "last.pt", last)
    resumed = runs.train_or_reuse(TINY, config, fake_data, out_dir="third", log=[].append, options=CPU)
    assert [h.epoch for h in resumed.history] == [1, 2]  # resumed, not restarted
