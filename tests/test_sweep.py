"""The sweep command end to end on a tiny generated image folder, and its grid checks."""

import json

import pytest

from vit_tutorial.sweep import GridError, load_grid

from .conftest import run, write_image_folder

GRID = """
[base]
dim = 16
depth = 2
heads = 2
mlp_dim = 32
epochs = 2
warmup_epochs = 1
batch_size = 10
val_size = 10

[recipes.light]
augment = "flip-crop"

[recipes.heavy]
augment = "trivialaugment"
mixup = 0.8
cutmix = 1.0
random_erasing = 0.25
ema = 0.9

[recipes.diverges]
lr = 1e12
grad_clip = 0.0
"""


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
def test_sweep_trains_ranks_reports_failures_and_skips_finished_recipes(tmp_path, monkeypatch):
    import os

    write_image_folder(tmp_path / "cifar", per_class=6)
    env = {**os.environ, "VIT_TUTORIAL_CACHE": str(tmp_path / "cache"), "VIT_TUTORIAL_DATA": str(tmp_path / "cifar")}
    (tmp_path / "grid.toml").write_text(GRID)
    out = tmp_path / "sweep"
    first = run("sweep", str(tmp_path / "grid.toml"), "--out", str(out), "--parallel", "2", env=env)
    assert first.returncode == 2 and "1 of 3 recipes failed (diverges)" in first.stderr, first.stderr
    rows = json.loads((out / "results.json").read_text())["recipes"]
    assert [r["recipe"] for r in rows[:2]] in (["light", "heavy"], ["heavy", "light"])
    assert rows[0]["best_val_accuracy"] >= rows[1]["best_val_accuracy"]
    assert rows[2]["recipe"] == "diverges" and rows[2]["status"] == "failed" and "loss became" in rows[2]["error"]
    heavy = next(r for r in rows if r["recipe"] == "heavy")
    assert heavy["train_config"]["augment"] == "trivialaugment" and heavy["model_config"]["dim"] == 16
    assert len(heavy["history"]) == 2 and heavy["images_per_second"] > 0 and heavy["epochs_run"] == 2
    assert heavy["overrides"] == {
        "augment": "trivialaugment",
        "mixup": 0.8,
        "cutmix": 1.0,
        "random_erasing": 0.25,
        "ema": 0.9,
    }
    table = (out / "results.md").read_text()
    assert table.index("| 3 | diverges | failed:") > table.index("| 1 |") and "ema=0.9" in table
    assert (out / "winner.pt").read_bytes() == (out / rows[0]["recipe"] / "best.pt").read_bytes()
    assert not (out / "light" / "metrics.json").exists()  # the sweep never evaluates on the test set

    from vit_tutorial.records import load_sweep_record, sweep_record, write_sweep_record

    record = sweep_record(json.loads((out / "results.json").read_text()), "grid.toml", "tiny")
    write_sweep_record(record, "tiny", tmp_path / "records")
    shipped = load_sweep_record("tiny", tmp_path / "records")
    assert [r["recipe"] for r in shipped["recipes"]] == [r["recipe"] for r in rows]
    assert shipped["recipes"][0]["val_accuracy"][rows[0]["best_epoch"] - 1] == round(rows[0]["best_val_accuracy"], 4)
    assert shipped["recipes"][2]["status"] == "failed" and "val_accuracy" not in shipped["recipes"][2]
    assert str(tmp_path) not in json.dumps(shipped)  # no local paths ship
    assert load_sweep_record("missing", tmp_path / "records") is None

    stamp = (out / "light" / "best.pt").stat().st_mtime_ns
    again = run("sweep", str(tmp_path / "grid.toml"), "--out", str(out), env=env)
    assert "light: finished earlier, skipped" in again.stdout and "heavy: finished earlier, skipped" in again.stdout
    assert (out / "light" / "best.pt").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[base]\nepochs = 2\n", r"needs a \[base\] table and one or more \[recipes.NAME\]"),
        ("[recipes.a]\nlearning_rate = 0.1\n", r"\[recipes.a\]: unknown setting\(s\) \['learning_rate'\]"),
        ("[recipes.a]\nlr = -1.0\n", r"\[recipes.a\]: TrainConfig.lr must be >= 0"),
        ("[recipes.a]\nmodel = 'cnn'\n", "model must be one of"),
        ('[recipes."a/b"]\nlr = 0.1\n', "becomes a folder name"),
        ("[recipes.a]\nlr = \n", "is not valid TOML"),
        ("[recipes.a]\nmodel = 'resnet'\ndim = 64\n", r"unknown setting\(s\) \['dim'\]"),
    ],
)
def test_grid_mistakes_are_named(tmp_path, text, message):
    (tmp_path / "grid.toml").write_text(text)
    with pytest.raises(GridError, match=message):
        load_grid(tmp_path / "grid.toml")


def test_the_shipped_grids_are_valid():
    from pathlib import Path

    grids = sorted((Path(__file__).parent.parent / "vit_tutorial" / "grids").glob("*.toml"))
    assert grids
    for grid in grids:
        recipes = load_grid(grid)
        assert len({r.name for r in recipes}) == len(recipes) >= 2


LONG_GRID = """
[base]
dim = 16
depth = 2
heads = 2
mlp_dim = 32
epochs = 100000
patience = 0
warmup_epochs = 1
batch_size = 10
val_size = 10

[recipes.a]
lr = 0.05

[recipes.b]
lr = 0.1
"""


def _worker_pids(out):
    """The processes that hold the recipes' run folders (from their lock files)."""
    import re

    pids = []
    for name in ("a", "b"):
        lock = out / name / ".lock"
        found = re.search(r"process (\d+)", lock.read_text()) if lock.is_file() else None
        if found:
            pids.append(int(found.group(1)))
    return pids


def _alive(pid):
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped by its parent) counts as ended
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return True


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_the_workers_never_outlive_the_sweep(cli_workspace, signal_name):
    import signal
    import subprocess
    import sys
    import time

    from .test_runs import _wait_for

    root, env = cli_workspace
    (root / "grid.toml").write_text(LONG_GRID)
    out = root / "sweep"
    args = [
        sys.executable,
        "-m",
        "vit_tutorial",
        "sweep",
        str(root / "grid.toml"),
        "--out",
        str(out),
        "--parallel",
        "2",
    ]
    parent = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(_worker_pids(out)) == 2 and (out / "a" / "last.pt").is_file())
        workers = _worker_pids(out)
        second = run("sweep", str(root / "grid.toml"), "--out", str(out), env=env)
        assert second.returncode == 2 and f"in use by process {parent.pid}" in second.stderr
        parent.send_signal(getattr(signal, signal_name))
        _, stderr = parent.communicate(timeout=120)
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers), "a worker trains on without its sweep"
    finally:
        parent.kill()
    assert (out / "a" / "last.pt").is_file()  # finished epochs kept
    if signal_name == "SIGTERM":
        assert parent.returncode == 143
        assert "results.md shows how far" in stderr, stderr
        table = (out / "results.md").read_text()  # a stopped sweep still reports how far each recipe got
        assert "(unfinished)" in table and "so far" in table, table
        rows = {row["recipe"]: row for row in json.loads((out / "results.json").read_text())["recipes"]}
        assert rows["a"]["status"] == "unfinished" and rows["a"]["epochs_run"] >= 1
        assert not (out / "winner.pt").exists()  # an unfinished recipe is never the winner


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
def test_sweep_bookkeeping_refuses_what_would_mislead(tmp_path, cli_workspace):
    root, env = cli_workspace
    (root / "grid.toml").write_text(GRID.replace("[recipes.diverges]\nlr = 1e12\ngrad_clip = 0.0\n", ""))
    out = root / "sweep"
    first = run("sweep", str(root / "grid.toml"), "--out", str(out), "--subset", "40", env=env)
    assert first.returncode == 0, first.stderr
    other = run("sweep", str(root / "grid.toml"), "--out", str(out), "--subset", "50", env=env)
    assert other.returncode == 2 and "swept with other data options" in other.stderr
    (out / "light" / "best.pt").write_bytes(b"damaged")
    again = run("sweep", str(root / "grid.toml"), "--out", str(out), "--subset", "40", env=env)
    rows = json.loads((out / "results.json").read_text())["recipes"]
    light = next(r for r in rows if r["recipe"] == "light")
    assert again.returncode == 2 and light["status"] == "failed" and "best.pt is unreadable" in light["error"]
    for recipe in ("light", "heavy"):
        (out / recipe / "best.pt").write_bytes(b"damaged")
    run("sweep", str(root / "grid.toml"), "--out", str(out), "--subset", "40", env=env)
    assert not (out / "winner.pt").exists()  # no recipe finished: no winner, not an old one


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[base]\nepochs = 2\n[recipes.a]\nlr = 0.1\n".replace("[base]\nepochs = 2", "base = 3"),
            "base must be a table",
        ),
        ('[recipes."results.json"]\nlr = 0.1\n', "a file the sweep writes itself"),
        ('[recipes."winner.pt"]\nlr = 0.1\n', "a file the sweep writes itself"),
        ('[recipes."a\\n"]\nlr = 0.1\n', "becomes a folder name"),
    ],
)
def test_more_grid_mistakes_are_named(tmp_path, text, message):
    (tmp_path / "grid.toml").write_text(text)
    with pytest.raises(GridError, match=message):
        load_grid(tmp_path / "grid.toml")


@pytest.mark.slow  # a command in a subprocess: seconds of start-up each
def test_sweep_places_its_workers_on_the_devices_given(tmp_path, cli_workspace):
    root, env = cli_workspace
    (root / "grid.toml").write_text(GRID.replace("[recipes.diverges]\nlr = 1e12\ngrad_clip = 0.0\n", ""))
    out = root / "sweep"
    missing = run("sweep", str(root / "grid.toml"), "--out", str(out), "--devices", "cpu,cuda:7", env=env)
    assert missing.returncode == 2 and "cuda:7" in missing.stderr and not (out / "light").exists()
    placed = run("sweep", str(root / "grid.toml"), "--out", str(out), "--devices", "cpu", "--parallel", "2", env=env)
    assert placed.returncode == 0, placed.stderr
    rows = json.loads((out / "results.json").read_text())["recipes"]
    assert all(row["hardware"].endswith("(cpu)") for row in rows)
