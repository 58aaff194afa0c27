"""An adversarial pass over the fault classes of the project's robustness issue, as a user meets them.

    .venv/bin/python tools/fault_pass.py [--json FILE] [--only CLASS]

Every case runs the command line in a subprocess (real signals, real locks, real file-size limits) or the
Python API, on a tiny generated image folder in a temporary directory, and checks what the README promises:
the right exit status, one line on stderr with no traceback, and nothing lost. It prints one line per case
and a table per class (cases, passed, failed). The unit tests hold one reproduction of each class; this pass
tries several more variants of each, so that a fix of one case that misses its class shows up here.
A few minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import TINY_ARGS, write_image_folder  # noqa: E402
from tests.test_sweep import LONG_GRID  # noqa: E402

CLASSES = {
    1: "two writers, one run folder",
    2: "signals other than Ctrl-C",
    3: "failures that are not OSError",
    4: "data that is silently wrong",
    5: "outputs that destroy inputs",
    6: "loads that check too little",
    7: "configs and inputs at the edges",
    8: "sweep bookkeeping",
    9: "contents trusted once the container passes",
    10: "weights of the wrong kind",
    11: "sizes without bounds",
    12: "an empty path",
    13: "names instead of identities",
    14: "files written through links or in place",
    15: "user strings in line-based output",
    16: "caches that trust metadata",
    17: "transparency without alpha",
    18: "signals after the first, a closed stdout",
    19: "grids that are not files",
    20: "helpers that take anything",
    21: "JSON inside HTML",
    22: "image folders with surprises",
}
CASES: list[tuple[int, str, Callable[[Workspace], None]]] = []


class Failed(Exception):
    """A case whose outcome breaks a promise."""


def case(kind: int):
    def register(function: Callable[[Workspace], None]) -> Callable[[Workspace], None]:
        CASES.append((kind, function.__name__.replace("_", " "), function))
        return function

    return register


def check(condition: object, message: str) -> None:
    if not condition:
        raise Failed(message)


class Workspace:
    """A temporary folder with a tiny CIFAR-shaped image folder, and the command line pointed at it."""

    def __init__(self, root: Path):
        self.root = root
        self.data = write_image_folder(root / "cifar", per_class=6)
        self.env = {
            **os.environ,
            "VIT_TUTORIAL_CACHE": str(root / "cache"),
            "VIT_TUTORIAL_DATA": str(self.data),
            "VIT_TUTORIAL_RUNS": str(root / "runs"),
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("VIT_TUTORIAL_DEBUG", None)
        self._count = 0

    def fresh(self, name: str) -> Path:
        self._count += 1
        return self.root / f"{self._count:02d}-{name}"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "vit_tutorial", *args]

    def run(self, *args: str, env: dict | None = None, limit_bytes: int | None = None, timeout: float = 300):
        def limited() -> None:
            if limit_bytes is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

        return subprocess.run(
            self.command(*args),
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=limited,
        )

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def train(self, out: Path, *extra: str):
        return self.run(*train_args(out, *extra))

    def trained(self, name: str) -> Path:
        out = self.fresh(name)
        result = self.train(out)
        check(result.returncode == 0, f"a plain training run failed: {result.stderr.strip()[-300:]}")
        return out


def train_args(out: Path, *extra: str) -> list[str]:
    return ["train", "--out", str(out), "--epochs", "1", "--warmup-epochs", "0", "--no-progress", *TINY_ARGS, *extra]


LONG = ("--epochs", "100000", "--patience", "0")


def one_line(result, code: int = 2, *words: str) -> str:
    """The failure a user should see: exit status `code`, one line on stderr, no traceback."""
    stderr = result.stderr if isinstance(result.stderr, str) else ""
    lines = stderr.strip().splitlines()
    check(result.returncode == code, f"exit {result.returncode}, expected {code}: {stderr.strip()[-300:]}")
    check("Traceback" not in stderr, f"a traceback: {stderr.strip()[-300:]}")
    check(len(lines) == 1, f"{len(lines)} lines on stderr, expected one: {stderr.strip()[-300:]}")
    for word in words:
        check(word in lines[0], f"{word!r} not in {lines[0]!r}")
    return lines[0]


def wait_for(condition: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        check(time.monotonic() < deadline, "timed out waiting")
        time.sleep(0.1)


def stop(process: subprocess.Popen, signum: int) -> str:
    process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    return stderr


def no_partials(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*partial*")]
    check(not left, f"half-written files left: {left}")


class Result:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr = returncode, stderr


# 1. Two writers, one run folder ------------------------------------------------------------------------------------


def _busy(ws: Workspace, name: str) -> tuple[Path, subprocess.Popen]:
    out = ws.fresh(name)
    first = ws.start(*train_args(out, *LONG))
    wait_for(lambda: (out / "last.pt").is_file())
    return out, first


def _second_writer(*extra: str) -> Callable[[Workspace], None]:
    """`train` (with `extra`: --resume, --overwrite) into a folder while a run still trains in it."""

    def attempt(ws: Workspace) -> None:
        out, first = _busy(ws, "busy")
        try:
            one_line(ws.train(out, *LONG, *extra), 2, f"in use by process {first.pid}")
            check((out / "last.pt").is_file(), "the running run's last.pt is gone")
        finally:
            stop(first, signal.SIGINT)

    return attempt


for _extra in ((), ("--resume",), ("--overwrite",)):
    CASES.append((1, " ".join(("train", *_extra, "into a folder where a run trains")), _second_writer(*_extra)))


@case(1)
def evaluate_does_not_wait_for_or_break_a_running_run(ws):
    out, first = _busy(ws, "busy-evaluate")
    try:
        result = ws.run("evaluate", "--checkpoint", str(out / "last.pt"))
        check(result.returncode == 0, f"evaluate of a running run's last.pt failed: {result.stderr.strip()}")
    finally:
        stderr = stop(first, signal.SIGINT)
    check("interrupted" in stderr, "the running run did not end as Ctrl-C says")


@case(1)
def a_killed_run_never_blocks_the_next(ws):
    out, first = _busy(ws, "killed")
    stop(first, signal.SIGKILL)
    resumed = ws.train(out, "--resume")  # other epochs: refused for that, not for a lock
    check("in use" not in resumed.stderr, f"a dead process still holds the folder: {resumed.stderr.strip()}")


@case(1)
def two_sweeps_into_one_folder(ws):
    grid = ws.fresh("grid.toml")
    grid.write_text(LONG_GRID)
    out = ws.fresh("sweep-twice")
    first = ws.start("sweep", str(grid), "--out", str(out))
    try:
        wait_for(lambda: (out / "a" / "last.pt").is_file())
        one_line(ws.run("sweep", str(grid), "--out", str(out)), 2, f"in use by process {first.pid}")
    finally:
        stop(first, signal.SIGINT)


# 2. Signals other than Ctrl-C -----------------------------------------------------------------------------------------


def _signal_while_training(signum: int, code: int) -> Callable[[Workspace], None]:
    """`signum` to a training run: exit status `code`, one line saying how to resume, last.pt kept, no partials."""

    def attempt(ws: Workspace) -> None:
        out, first = _busy(ws, signal.Signals(signum).name.lower())
        stderr = stop(first, signum)
        one_line(Result(first.returncode, stderr), code, "interrupted", "--resume")
        check((out / "last.pt").is_file(), "last.pt lost")
        no_partials(out)

    return attempt


# SIGTERM: kill or a scheduler; SIGINT: Ctrl-C; SIGHUP: a closing terminal (the same promise as SIGTERM)
for _signum, _code in ((signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)):
    CASES.append((2, f"{signal.Signals(_signum).name} while training", _signal_while_training(_signum, _code)))


@case(2)
def sigterm_then_resume_goes_on(ws):
    out, first = _busy(ws, "term-resume")
    stop(first, signal.SIGTERM)
    from vit_tutorial.checkpoint import load_checkpoint

    kept = load_checkpoint(out / "last.pt")["epochs_run"]
    again = ws.start(*train_args(out, *LONG, "--resume"))
    wait_for(lambda: load_checkpoint(out / "last.pt")["epochs_run"] > kept)
    stderr = stop(again, signal.SIGTERM)
    one_line(Result(again.returncode, stderr), 143, "interrupted")


@case(2)
def sigterm_while_starting(ws):
    out = ws.fresh("term-start")
    process = ws.start(*train_args(out))
    time.sleep(0.3)
    stderr = stop(process, signal.SIGTERM)
    one_line(Result(process.returncode, stderr), 143, "while starting")
    check(not out.exists(), "a folder was made")


@case(2)
def sigterm_while_a_sweep_starts(ws):
    grid = ws.fresh("grid.toml")
    grid.write_text(LONG_GRID)
    out = ws.fresh("sweep-start")
    parent = ws.start("sweep", str(grid), "--out", str(out), "--parallel", "2")
    time.sleep(1.5)
    stderr = stop(parent, signal.SIGTERM)
    check(parent.returncode == 143, f"exit {parent.returncode}: {stderr.strip()[-300:]}")
    check("Traceback" not in stderr and len(stderr.strip().splitlines()) <= 1, stderr.strip()[-300:])


def _sweep_training(ws: Workspace, name: str) -> tuple[Path, subprocess.Popen, list[int]]:
    """A sweep of two recipes training side by side, and its workers' process ids."""
    grid = ws.fresh("grid.toml")
    grid.write_text(LONG_GRID)
    out = ws.fresh(name)
    parent = ws.start("sweep", str(grid), "--out", str(out), "--parallel", "2")
    wait_for(lambda: all((out / n / "last.pt").is_file() for n in ("a", "b")))
    workers = [int((out / n / ".lock").read_text().split("process ")[1].split()[0]) for n in ("a", "b")]
    return out, parent, workers


@case(2)
def sigterm_to_a_sweep_ends_its_workers(ws):
    out, parent, workers = _sweep_training(ws, "sweep-term")
    stderr = stop(parent, signal.SIGTERM)
    one_line(Result(parent.returncode, stderr), 143, "interrupted")
    wait_for(lambda: not any(_alive(pid) for pid in workers), 60)
    check("(unfinished)" in (out / "results.md").read_text(), "the table does not say how far the recipes got")


@case(2)
def sigkill_to_a_sweep_ends_its_workers(ws):
    _, parent, workers = _sweep_training(ws, "sweep-kill")
    stop(parent, signal.SIGKILL)
    wait_for(lambda: not any(_alive(pid) for pid in workers), 60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


# 3. Failures that are not OSError -------------------------------------------------------------------------------------


@case(3)
def a_file_size_limit_while_saving_a_checkpoint(ws):
    ws.trained("warm-cache")  # the decoded cache exists: the limit meets the checkpoint
    out = ws.fresh("fsize")
    one_line(ws.run(*train_args(out), limit_bytes=20_000), 2, "cannot write")
    no_partials(out)


@case(3)
def a_file_size_limit_while_writing_metrics(ws):
    out = ws.trained("fsize-metrics")
    before = (out / "metrics.json").read_bytes()
    result = ws.run("evaluate", "--checkpoint", str(out / "best.pt"), "--metrics", str(out / "m.json"), limit_bytes=5)
    one_line(result, 2, "cannot write")
    check((out / "metrics.json").read_bytes() == before and not (out / "m.json").exists(), "a file changed")
    no_partials(out)


def _odd_file(ws: Workspace, make: Callable[[Path], None], name: str) -> None:
    root = ws.fresh(name)
    write_image_folder(root, per_class=6)
    make(root / "train" / "cat" / "9999.png")
    env = {**ws.env, "VIT_TUTORIAL_DATA": str(root), "VIT_TUTORIAL_CACHE": str(root / ".cache")}
    result = ws.run(*train_args(ws.fresh(name + "-run")), env=env, timeout=120)
    one_line(result, 2, "9999.png")


@case(3)
def a_folder_named_like_an_image(ws):
    _odd_file(ws, lambda p: p.mkdir(), "dir-png")


@case(3)
def a_fifo_named_like_an_image(ws):
    _odd_file(ws, lambda p: os.mkfifo(p), "fifo-png")


@case(3)
def a_dangling_symlink(ws):
    _odd_file(ws, lambda p: p.symlink_to(p.parent / "nowhere.png"), "dangling")


@case(3)
def a_symlink_loop(ws):
    _odd_file(ws, lambda p: p.symlink_to(p), "loop")


@case(3)
def an_unreadable_image(ws):
    if os.geteuid() == 0:  # root reads everything: make it unreadable another way
        _odd_file(ws, lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20), "truncated")
    else:
        _odd_file(ws, lambda p: (p.write_bytes(b"x"), p.chmod(0)), "unreadable")


@case(3)
def a_data_root_that_is_a_file(ws):
    env = {**ws.env, "VIT_TUTORIAL_DATA": str(ws.fresh("root-file"))}
    Path(env["VIT_TUTORIAL_DATA"]).write_text("not a folder")
    one_line(ws.run(*train_args(ws.fresh("root-file-run")), env=env), 2, "root-file")


@case(3)
def a_cache_that_cannot_be_written(ws):
    blocker = ws.fresh("cache-file")
    blocker.write_text("a file where the cache folder should be")
    root = ws.fresh("cache-data")
    write_image_folder(root, per_class=6)
    env = {**ws.env, "VIT_TUTORIAL_DATA": str(root), "VIT_TUTORIAL_CACHE": str(blocker / "cache")}
    result = ws.run(*train_args(ws.fresh("cache-run")), env=env)
    check(result.returncode in (0, 2), f"exit {result.returncode}: {result.stderr.strip()[-300:]}")
    check("Traceback" not in result.stderr, result.stderr.strip()[-300:])
    if result.returncode == 2:
        one_line(result, 2)


@case(3)
def out_that_is_a_file(ws):
    out = ws.fresh("out-file")
    out.write_text("keep me")
    one_line(ws.train(out), 2)
    check(out.read_text() == "keep me", "the file named by --out was changed")


# 4. Data that is silently wrong ---------------------------------------------------------------------------------------


def _folder(ws: Workspace, name: str, change: Callable[[Path], None]):
    root = ws.fresh(name)
    write_image_folder(root, per_class=6)
    change(root)
    env = {**ws.env, "VIT_TUTORIAL_DATA": str(root), "VIT_TUTORIAL_CACHE": str(root.parent / (name + "-cache"))}
    return ws.run(*train_args(ws.fresh(name + "-run")), env=env), env, root


@case(4)
def an_eleventh_class_folder(ws):
    one_line(_folder(ws, "llama", lambda r: (r / "train" / "llama").mkdir())[0], 2, "llama")


@case(4)
def images_in_a_nested_folder(ws):
    one_line(_folder(ws, "nested", lambda r: (r / "test" / "dog" / "more").mkdir())[0], 2, "dog/more")


@case(4)
def a_class_folder_without_images(ws):
    def empty(root: Path) -> None:
        for path in (root / "train" / "ship").iterdir():
            path.unlink()

    one_line(_folder(ws, "no-ships", empty)[0], 2, "ship")


def _trained_then_edited(ws: Workspace, name: str, image: str) -> tuple[Path, dict]:
    """A run trained on its own image folder, then one image of that folder saved again with other pixels."""
    from PIL import Image

    result, env, root = _folder(ws, name, lambda r: None)
    check(result.returncode == 0, result.stderr)
    out = ws.fresh(name + "-run")
    check(ws.run(*train_args(out), env=env).returncode == 0, "training failed")
    Image.new("RGB", (32, 32), (9, 9, 9)).save(root / image)  # same name, new pixels, as an editor saves it
    return out, env


@case(4)
def resume_after_a_training_image_was_edited_in_place(ws):
    out, env = _trained_then_edited(ws, "edited", "train/cat/0000.png")
    one_line(ws.run(*train_args(out, "--resume"), env=env), 2, "other data")


@case(4)
def evaluate_after_a_test_image_was_edited_in_place(ws):
    out, env = _trained_then_edited(ws, "edited-test", "test/cat/0000.png")
    before = json.loads((out / "metrics.json").read_text())["provenance"]
    evaluated = ws.run("evaluate", "--checkpoint", str(out / "best.pt"), "--metrics", str(out / "m2.json"), env=env)
    check(evaluated.returncode == 0, evaluated.stderr)
    after = json.loads((out / "m2.json").read_text())["provenance"]
    check(before.get("test_fingerprint") != after.get("test_fingerprint"), "the test set's fingerprint did not change")


@case(4)
def a_phone_photo_is_classified_upright(ws):
    from PIL import Image

    from vit_tutorial.predict import load_image

    photo = Image.new("RGB", (40, 30), (0, 0, 0))
    photo.paste((255, 255, 255), (0, 0, 10, 30))  # a white band on the left, stored rotated
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = ws.fresh("photo.jpg")
    photo.save(path, exif=exif)
    image = load_image(path)
    check(image[:, 2, 16].mean() > 0.8 and image[:, 29, 16].mean() < 0.2, "the EXIF orientation was ignored")


@case(4)
def a_32_bit_image_is_scaled_by_its_range(ws):
    import numpy as np
    from PIL import Image

    from vit_tutorial.predict import load_image

    path = ws.fresh("grey32.tif")
    Image.fromarray(np.full((40, 40), 2**30, dtype=np.int32), mode="I").save(path)
    value = float(load_image(path).mean())
    check(abs(value - 128 / 255) < 2 / 255, f"half of the 32-bit range became {value * 255:.0f}/255, not 128")


@case(4)
def images_of_every_mode_in_the_folder(ws):
    """Greyscale, palette with transparency, CMYK and 16-bit images among the training images load as RGB."""
    import numpy as np
    from PIL import Image

    def odd_modes(root: Path) -> None:
        folder = root / "train" / "dog"
        Image.new("L", (32, 32), 128).save(folder / "grey.png")
        Image.new("P", (32, 32), 3).save(folder / "palette.png", transparency=3)
        Image.new("CMYK", (32, 32), (0, 0, 0, 0)).save(folder / "cmyk.jpg")
        Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(folder / "deep.png")

    result = _folder(ws, "modes", odd_modes)[0]
    check(result.returncode == 0, f"exit {result.returncode}: {result.stderr.strip()[-300:]}")


@case(4)
def an_image_of_the_wrong_size_in_the_folder(ws):
    from PIL import Image

    result = _folder(ws, "big", lambda r: Image.new("RGB", (64, 48)).save(r / "test" / "cat" / "big.png"))[0]
    one_line(result, 2, "big.png")


@case(4)
def file_names_that_are_not_utf8(ws):
    def rename(root: Path) -> None:
        odd = os.fsdecode(b"ch\xe4t.png")
        (root / "train" / "cat" / "0000.png").rename(root / "train" / "cat" / odd)

    result = _folder(ws, "latin1", rename)[0]
    check(result.returncode == 0, f"exit {result.returncode}: {result.stderr.strip()[-300:]}")


# 5. Outputs that destroy inputs ---------------------------------------------------------------------------------------


@case(5)
def metrics_aimed_at_the_checkpoint(ws):
    out = ws.trained("metrics-at-best")
    before = (out / "best.pt").read_bytes()
    result = ws.run("evaluate", "--checkpoint", str(out / "best.pt"), "--metrics", str(out / "best.pt"))
    one_line(result, 2, "not a metrics file")
    check((out / "best.pt").read_bytes() == before, "best.pt was overwritten")


@case(5)
def metrics_aimed_at_the_history(ws):
    out = ws.trained("metrics-at-history")
    before = (out / "history.json").read_bytes()
    result = ws.run("evaluate", "--checkpoint", str(out / "best.pt"), "--metrics", str(out / "history.json"))
    one_line(result, 2)
    check((out / "history.json").read_bytes() == before, "history.json was overwritten")


@case(5)
def evaluating_last_pt_keeps_the_runs_own_metrics(ws):
    out = ws.trained("eval-last")
    before = (out / "metrics.json").read_bytes()
    result = ws.run("evaluate", "--checkpoint", str(out / "last.pt"))
    check(result.returncode == 0, result.stderr)
    check((out / "metrics.json").read_bytes() == before, "the run's own metrics.json was replaced")
    check((out / "metrics-last.json").is_file(), "no metrics-last.json")


@case(5)
def overwrite_removes_the_old_models_metrics(ws):
    out = ws.trained("overwrite")
    check(ws.run("evaluate", "--checkpoint", str(out / "best.pt"), "--subset", "10").returncode == 0, "evaluate")
    check(ws.train(out, "--overwrite").returncode == 0, "overwrite failed")
    check(not list(out.glob("metrics-*.json")), "the old model's metrics stayed beside the new model")


@case(5)
def a_subset_larger_than_the_test_set_says_what_was_measured(ws):
    out = ws.trained("subset")
    check(ws.run("evaluate", "--checkpoint", str(out / "best.pt"), "--subset", "500").returncode == 0, "evaluate")
    files = list(out.glob("metrics-subset-*.json"))
    check(len(files) == 1, f"files: {files}")
    measured = json.loads(files[0].read_text())["num_images"]
    check(files[0].name == f"metrics-subset-{measured}.json", f"{files[0].name} holds {measured} images")


@case(5)
def evaluate_without_a_train_folder(ws):
    import shutil

    out = ws.trained("no-train")
    root = ws.fresh("test-only")
    shutil.copytree(ws.data / "test", root / "test")
    env = {**ws.env, "VIT_TUTORIAL_DATA": str(root), "VIT_TUTORIAL_CACHE": str(root / ".cache")}
    result = ws.run("evaluate", "--checkpoint", str(out / "best.pt"), "--metrics", str(root / "m.json"), env=env)
    check(result.returncode == 0, f"exit {result.returncode}: {result.stderr.strip()[-300:]}")


@case(5)
def a_recipe_named_like_the_sweeps_own_output(ws):
    grid = ws.fresh("grid.toml")
    grid.write_text(GRID.replace("[recipes.b]", '[recipes."results.json"]'))
    one_line(ws.run("sweep", str(grid), "--out", str(ws.fresh("sweep-own"))), 2, "results.json")


# 6. Loads that check too little ---------------------------------------------------------------------------------------


def _changed_checkpoint(ws: Workspace, name: str, change: Callable[[dict], None]) -> Path:
    from vit_tutorial.checkpoint import load_checkpoint, save_checkpoint

    out = ws.trained(name)
    payload = load_checkpoint(out / "best.pt")
    change(payload)
    payload.pop("checksum", None)
    return save_checkpoint(out / "changed.pt", payload)  # a valid checksum of the bad content


@case(6)
def a_string_where_a_number_belongs(ws):
    path = _changed_checkpoint(ws, "string-val", lambda p: p["train_config"].update(val_size="5000"))
    one_line(ws.run("evaluate", "--checkpoint", str(path)), 2, "val_size")


@case(6)
def a_float_seed(ws):
    path = _changed_checkpoint(ws, "float-seed", lambda p: p["train_config"].update(seed=1.5))
    one_line(ws.run("evaluate", "--checkpoint", str(path)), 2, "seed")


@case(6)
def nan_weights_are_not_scored(ws):
    path = _changed_checkpoint(ws, "nan", lambda p: p["model"]["head.weight"].fill_(float("nan")))
    one_line(ws.run("evaluate", "--checkpoint", str(path)), 2, "NaN")


@case(6)
def infinite_weights_are_not_used_to_predict(ws):
    path = _changed_checkpoint(ws, "inf", lambda p: p["model"]["head.bias"].fill_(float("inf")))
    image = next((ws.data / "test" / "cat").iterdir())
    one_line(ws.run("predict", str(image), "--checkpoint", str(path)), 2, "infinite")


@case(6)
def a_checkpoint_cut_short(ws):
    out = ws.trained("cut")
    data = (out / "best.pt").read_bytes()
    (out / "cut.pt").write_bytes(data[: len(data) // 2])
    one_line(ws.run("evaluate", "--checkpoint", str(out / "cut.pt")), 2)


@case(6)
def one_flipped_byte(ws):
    out = ws.trained("flipped")
    data = bytearray((out / "best.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "flipped.pt").write_bytes(bytes(data))
    one_line(ws.run("evaluate", "--checkpoint", str(out / "flipped.pt")), 2)


# 7. Configs and inputs at the edges -----------------------------------------------------------------------------------


@case(7)
def infinite_settings(ws):
    for option in ("--lr", "--momentum", "--weight-decay", "--mixup"):
        one_line(ws.train(ws.fresh("inf"), option, "inf"), 2, "finite")


@case(7)
def seeds_that_overflow(ws):
    for seed in (str(2**64), "-1"):
        one_line(ws.train(ws.fresh("seed"), "--seed", seed), 2, "seed")


@case(7)
def a_word_where_a_number_belongs(ws):
    one_line(ws.train(ws.fresh("word"), "--epochs", "many"), 2, "--help")


@case(7)
def an_unknown_option(ws):
    one_line(ws.train(ws.fresh("unknown"), "--learning-rate", "0.1"), 2, "--help")


@case(7)
def numbers_out_of_range(ws):
    for option, value in (
        ("--batch-size", "0"),
        ("--epochs", "0"),
        ("--val-size", "50000"),
        ("--subset", "5"),
        ("--lr", "-0.1"),
        ("--dim", "15"),  # two heads cannot split 15 dimensions
        ("--device", "cuda:7"),
    ):
        try:
            one_line(ws.train(ws.fresh("range"), option, value), 2, option.lstrip("-").split("-")[0])
        except Failed as failed:
            raise Failed(f"{option} {value}: {failed}") from None


@case(7)
def predict_options_out_of_range(ws):
    out = ws.trained("predict-range")
    image = next((ws.data / "test" / "cat").iterdir())
    one_line(ws.run("predict", str(image), "--checkpoint", str(out / "best.pt"), "--top-k", "11"), 2, "top-k")
    one_line(ws.run("predict", str(image), "--checkpoint", str(out / "missing.pt")), 2, "missing.pt")


@case(7)
def a_resnet_checkpoint_evaluated_as_a_vit(ws):
    out = ws.fresh("resnet")
    trained = ws.run(
        "train",
        "--model",
        "resnet",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--no-progress",
        "--batch-size",
        "10",
        "--val-size",
        "10",
        "--subset",
        "20",
    )
    check(trained.returncode == 0, trained.stderr.strip()[-300:])
    one_line(ws.run("evaluate", "--model", "vit", "--checkpoint", str(out / "best.pt")), 2, "resnet")


@case(7)
def debug_zero_means_off(ws):
    env = {**ws.env, "VIT_TUTORIAL_DEBUG": "0"}
    one_line(ws.run(*train_args(ws.fresh("debug"), "--heads", "3"), env=env), 2)


def _raises(call: Callable[[], object], error: type[BaseException], words: str) -> None:
    try:
        call()
    except error as raised:
        check(words in str(raised), f"{words!r} not in {str(raised)!r}")
        check(len(str(raised).splitlines()) == 1, f"more than one line: {raised}")
        return
    except Exception as other:  # noqa: BLE001 (any other error breaks the promise)
        raise Failed(f"{type(other).__name__}: {other}") from None
    raise Failed(f"no {error.__name__}")


@case(7)
def images_of_the_wrong_type(ws):
    import torch

    from vit_tutorial import ViT
    from vit_tutorial.config import ViTConfig

    model = ViT(ViTConfig(dim=16, depth=2, heads=2, mlp_dim=32))
    _raises(lambda: model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)), ValueError, "uint8")
    _raises(lambda: model(torch.zeros(1, 3, 32, 32, dtype=torch.float64)), ValueError, "float64")
    _raises(lambda: model(torch.zeros(1, 3, 31, 32)), ValueError, "32")


@case(7)
def indices_that_are_not_whole_numbers(ws):
    import torch

    from vit_tutorial.attention_maps import cls_attention
    from vit_tutorial.data import Split

    attentions = torch.rand(1, 2, 2, 5, 5)
    _raises(lambda: cls_attention(attentions, layer=0.5), ValueError, "whole number")
    _raises(lambda: cls_attention(attentions, layer=5), ValueError, "layer")
    split = Split(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    _raises(lambda: split.subset(-1), ValueError, "whole number")


@case(7)
def the_browser_gets_only_the_books_vit(ws):
    from vit_tutorial import ResNet
    from vit_tutorial.browser import write_browser_weights

    _raises(lambda: write_browser_weights(ResNet(), ws.fresh("w.js")), TypeError, "ViT")


@case(7)
def predict_on_what_is_not_an_image(ws):
    out = ws.trained("predict-text")
    text = ws.fresh("notes.png")
    text.write_text("not an image")
    one_line(ws.run("predict", str(text), "--checkpoint", str(out / "best.pt")), 2, "notes.png")


# 8. Sweep bookkeeping -------------------------------------------------------------------------------------------------

GRID = LONG_GRID.replace("epochs = 100000\npatience = 0\n", "epochs = 2\n")  # recipes a and b


def _swept(ws: Workspace, name: str) -> tuple[Path, Path]:
    grid = ws.fresh("grid.toml")
    grid.write_text(GRID)
    out = ws.fresh(name)
    result = ws.run("sweep", str(grid), "--out", str(out), "--subset", "40")
    check(result.returncode == 0, f"sweep failed: {result.stderr.strip()[-300:]}")
    return grid, out


@case(8)
def a_rerun_with_other_data(ws):
    grid, out = _swept(ws, "sweep-subset")
    one_line(ws.run("sweep", str(grid), "--out", str(out), "--subset", "50"), 2, "other data")


@case(8)
def a_damaged_best_pt_is_reported_as_such(ws):
    grid, out = _swept(ws, "sweep-damaged")
    (out / "a" / "best.pt").write_bytes(b"damaged")
    ws.run("sweep", str(grid), "--out", str(out), "--subset", "40")
    row = next(r for r in json.loads((out / "results.json").read_text())["recipes"] if r["recipe"] == "a")
    check(row["status"] == "failed" and "unreadable" in row.get("error", ""), f"row: {row.get('error')}")


@case(8)
def no_old_winner_when_nothing_finished(ws):
    grid, out = _swept(ws, "sweep-winner")
    for name in ("a", "b"):
        (out / name / "best.pt").write_bytes(b"damaged")
    ws.run("sweep", str(grid), "--out", str(out), "--subset", "40")
    check(not (out / "winner.pt").exists(), "an old winner.pt survived a sweep in which nothing finished")


@case(8)
def grid_mistakes(ws):
    for text, words in (
        ("base = 3\n[recipes.a]\nlr = 0.1\n", "base"),
        ('[recipes."a\\n"]\nlr = 0.1\n', "folder name"),
        ("[recipes.a]\nlr = 'fast'\n", "lr"),
        ("[recipes.a]\nlearning_rate = 0.1\n", "learning_rate"),
        ("[recipes.a\nlr = 0.1\n", "grid"),
    ):
        grid = ws.fresh("grid.toml")
        grid.write_text(text)
        one_line(ws.run("sweep", str(grid), "--out", str(ws.fresh("sweep-bad"))), 2, words)


@case(8)
def sweep_options_and_files_that_make_no_sense(ws):
    grid = ws.fresh("grid.toml")
    grid.write_text(GRID)
    one_line(ws.run("sweep", str(ws.fresh("missing.toml")), "--out", str(ws.fresh("s"))), 2, "missing.toml")
    one_line(ws.run("sweep", str(grid), "--out", str(ws.fresh("s")), "--parallel", "0"), 2, "parallel")
    empty = ws.fresh("empty.toml")
    empty.write_text("[base]\nepochs = 2\n")
    one_line(ws.run("sweep", str(empty), "--out", str(ws.fresh("s"))), 2, "recipe")


# The third pass (issue 32) --------------------------------------------------------------------------------


def api(code: str, ws: Workspace, env: dict | None = None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter with the package, printing what it finds; its exceptions are its output."""
    return subprocess.run(
        [sys.executable, "-c", code], env=env or ws.env, capture_output=True, text=True, timeout=300, check=False
    )


def train_on(ws: Workspace, data: Path) -> subprocess.CompletedProcess:
    """A tiny training run on the image folder `data`."""
    return ws.run(*train_args(ws.fresh("r")), env={**ws.env, "VIT_TUTORIAL_DATA": str(data)})


def _saved(ws: Workspace, change: str) -> Path:
    """A checkpoint of a tiny model with a valid checksum over content changed by the statement `change`."""
    path = ws.fresh("changed.pt")
    code = (
        "import torch\nfrom vit_tutorial import ViT, ViTConfig\nfrom vit_tutorial.checkpoint import save_checkpoint\n"
        "m = ViT(ViTConfig(dim=16, depth=2, heads=2, mlp_dim=32))\n"
        "p = {'architecture': 'vit', 'model_config': m.config.to_dict(), 'model': m.state_dict(), "
        "'provenance': {}, 'hardware': 'x'}\n"
        f"{change}\nsave_checkpoint({str(path)!r}, p)\n"
    )
    result = api(code, ws)
    check(result.returncode == 0, f"could not write the case's checkpoint: {result.stderr[-300:]}")
    return path


@case(9)
def checkpoint_keyed_by_a_number(ws):
    path = _saved(ws, "p['model'][3] = torch.zeros(1)")
    one_line(ws.run("evaluate", "--checkpoint", str(path)), 2, "not a weight's name")


@case(9)
def history_entries_that_are_numbers(ws):
    path = _saved(ws, "p['history'] = [1, 2, 3]")
    one_line(ws.run("evaluate", "--checkpoint", str(path)), 2, "history entry")


@case(9)
def a_schedule_step_that_is_a_string(ws):
    out = ws.trained("step")
    code = (
        "from vit_tutorial.checkpoint import load_checkpoint, save_checkpoint\n"
        f"p = load_checkpoint({str(out / 'last.pt')!r}); p['scheduler']['last_epoch'] = '7'\n"
        "p['train_config']['epochs'] = 2\n"
        f"save_checkpoint({str(out / 'last.pt')!r}, p)\n"
    )
    check(api(code, ws).returncode == 0, "could not damage last.pt")
    one_line(ws.train(out, "--epochs", "2", "--resume"), 2, "schedule's step")


@case(9)
def a_grid_nested_thousands_deep(ws):
    grid = ws.fresh("deep.toml")
    grid.write_text("[recipes.a]\nx = " + "[" * 20000 + "]" * 20000 + "\n")
    one_line(ws.run("sweep", str(grid), "--out", str(ws.fresh("s"))), 2)


@case(10)
def complex_and_boolean_weights(ws):
    for kind in ("torch.complex64", "torch.bool", "torch.int32"):
        path = _saved(ws, f"p['model']['head.weight'] = p['model']['head.weight'].to({kind})")
        one_line(ws.run("evaluate", "--checkpoint", str(path)), 2, "not a floating-point weight")


@case(11)
def sizes_beyond_any_machine(ws):
    for option, value in (("--dim", "16777216"), ("--mlp-dim", str(10**12)), ("--depth", str(10**9))):
        one_line(ws.run("train", option, value, "--out", str(ws.fresh("big"))), 2)
    one_line(ws.run("train", "--randaugment-n", str(10**9), "--out", str(ws.fresh("big"))), 2, "randaugment_n")


@case(12)
def empty_output_paths(ws):
    one_line(ws.run("train", "--out", ""), 2, "empty path")
    one_line(ws.run("sweep", "grid.toml", "--out", ""), 2, "empty path")


@case(13)
def metrics_of_another_run_under_the_same_name(ws):
    a, b = ws.trained("a"), ws.trained("b")
    own = (a / "metrics.json").read_text()
    one_line(ws.run("evaluate", "--checkpoint", str(b / "best.pt"), "--metrics", str(a / "metrics.json")), 2)
    check((a / "metrics.json").read_text() == own, "run A's metrics were replaced")


@case(13)
def a_sweep_rerun_on_other_images(ws):
    grid = ws.fresh("grid.toml")
    grid.write_text(GRID.replace("epochs = 2", "epochs = 1"))
    out = ws.fresh("sweep")
    check(ws.run("sweep", str(grid), "--out", str(out)).returncode in (0, 2), "the first sweep crashed")
    other = write_image_folder(ws.fresh("other-cifar"), per_class=7)
    result = ws.run("sweep", str(grid), "--out", str(out), env={**ws.env, "VIT_TUTORIAL_DATA": str(other)})
    one_line(result, 2, "other data")


@case(14)
def a_lock_that_links_to_a_users_file(ws):
    precious = ws.fresh("notes.txt")
    precious.write_text("mine")
    out = ws.fresh("linked")
    out.mkdir()
    (out / ".lock").symlink_to(precious)
    one_line(ws.train(out), 2, "is a link")
    check(precious.read_text() == "mine", "the linked file was changed")


@case(15)
def a_pipe_and_a_newline_in_a_recipe(ws):
    grid = ws.fresh("grid.toml")
    grid.write_text(
        GRID.replace("epochs = 2", "epochs = 1") + '\n[recipes.odd]\nteacher = "a|b\\nc"\ndistillation = "hard"\n'
    )
    out = ws.fresh("sweep")
    ws.run("sweep", str(grid), "--out", str(out))
    rows = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("|")]
    check(all(line.count("|") - line.count("\\|") == rows[0].count("|") for line in rows), "a row has extra cells")


@case(16)
def an_image_replaced_with_its_time_stamp_restored(ws):
    from PIL import Image

    data = write_image_folder(ws.fresh("cifar"), per_class=3)
    env = {**ws.env, "VIT_TUTORIAL_DATA": str(data)}
    code = "from vit_tutorial.data import load_cifar10\nprint(load_cifar10(val_size=5).provenance['test_fingerprint'])"
    before = api(code, ws, env)
    target = data / "test" / "cat" / "0000.png"
    stat = target.stat()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` or `rsync -t` leave it
    after = api(code, ws, env)
    check(before.stdout and after.stdout and before.stdout != after.stdout, "the stale cache was served")


@case(17)
def a_colour_keyed_png(ws):
    from PIL import Image

    path = ws.fresh("keyed.png")
    Image.new("RGB", (32, 32), (10, 20, 30)).save(path, transparency=(10, 20, 30))
    code = (
        "import numpy as np\nfrom vit_tutorial.images import read_rgb\n"
        f"print(np.asarray(read_rgb({str(path)!r}))[0, 0].tolist())"
    )
    check(api(code, ws).stdout.strip() == "[255, 255, 255]", "the keyed colour was not laid on white")


@case(18)
def a_second_sigterm_and_a_closed_stdout(ws):
    out = ws.fresh("twice")
    process = ws.start(*train_args(out, *LONG))
    wait_for(lambda: (out / "last.pt").is_file())
    process.send_signal(signal.SIGTERM)
    time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    check(process.returncode == 143 and len(stderr.strip().splitlines()) == 1, f"{process.returncode}: {stderr[-300:]}")
    piped = ws.fresh("piped")
    command = " ".join(ws.command(*train_args(piped))) + " | head -1"
    result = subprocess.run(command, shell=True, env=ws.env, capture_output=True, text=True, check=False)
    check(
        result.stderr.strip() == "" and (piped / "best.pt").is_file(), f"a closed stdout broke the run: {result.stderr}"
    )


@case(19)
def a_grid_that_is_a_pipe(ws):
    fifo = ws.fresh("grid.toml")
    os.mkfifo(fifo)
    one_line(ws.run("sweep", str(fifo), "--out", str(ws.fresh("s")), timeout=60), 2, "not a file")


@case(20)
def helpers_given_nonsense(ws):
    calls = [
        "from vit_tutorial.patches import patchify; import torch; patchify(torch.zeros(1, 3, 32, 32), 0)",
        "from vit_tutorial.viz import image_grid; import torch; image_grid(torch.zeros(2, 3, 32, 32), ncols=0)",
        "from vit_tutorial.explorer import select_examples; import torch; "
        "select_examples(torch.arange(10), per_class=-1)",
        "from vit_tutorial.data import Split; import torch; "
        "Split(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.tensor([0.5]))",
        "from vit_tutorial.data import load_cifar10; load_cifar10(val_size=True)",
        "from vit_tutorial.attention_maps import attention_overlay; import torch; "
        "attention_overlay(torch.zeros(3, 32, 32), torch.rand(4, 4), float('nan'))",
    ]
    for call in calls:
        result = api(call, ws)
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        check(result.returncode != 0 and last.startswith(("ValueError", "TypeError")), f"{call}: {last or 'no error'}")


@case(21)
def a_weights_url_that_opens_a_comment(ws):
    code = (
        "from vit_tutorial import ViT, ViTConfig\nfrom vit_tutorial.explorer import static_explorer_html\n"
        "from tests.conftest import make_split\n"
        "html = static_explorer_html(ViT(ViTConfig(dim=16, depth=2, heads=2, mlp_dim=32)), make_split(20), "
        "weights_url='<!--<script>', indices=[0, 1])\nprint('<!--' in html)"
    )
    check(api(code, ws).stdout.strip() == "False", "the page holds an unescaped comment opener")


@case(22)
def an_eleventh_class_folder_and_a_link_loop(ws):
    data = write_image_folder(ws.fresh("cifar"), per_class=3)
    (data / "train" / "zebra").mkdir()
    one_line(train_on(ws, data), 2, "zebra")
    data = write_image_folder(ws.fresh("cifar"), per_class=3)
    os.symlink("loop.png", data / "train" / "cat" / "loop.png")
    one_line(train_on(ws, data), 2, "loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every case's outcome here")
    parser.add_argument("--only", type=int, choices=sorted(CLASSES), help="one class")
    args = parser.parse_args()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="fault-pass-") as folder:
        ws = Workspace(Path(folder))
        for kind, name, function in CASES:
            if args.only and kind != args.only:
                continue
            started = time.perf_counter()
            try:
                function(ws)
                error = ""
            except Failed as failed:
                error = str(failed)
            except Exception:  # noqa: BLE001 (reported as the harness's own failure)
                error = "the harness broke: " + traceback.format_exc(limit=3).strip().splitlines()[-1]
            seconds = time.perf_counter() - started
            outcomes.append({"class": kind, "case": name, "passed": not error, "error": error, "seconds": seconds})
            print(f"{'pass' if not error else 'FAIL'}  {kind}  {name} ({seconds:.1f} s){'  ' + error if error else ''}")
    print("\n| class | cases | passed | failed |\n| --- | ---: | ---: | ---: |")
    for kind, title in CLASSES.items():
        mine = [o for o in outcomes if o["class"] == kind]
        if mine:
            passed = sum(o["passed"] for o in mine)
            print(f"| {kind}. {title} | {len(mine)} | {passed} | {len(mine) - passed} |")
    passed = sum(o["passed"] for o in outcomes)
    print(f"| all | {len(outcomes)} | {passed} | {len(outcomes) - passed} |")
    if args.json:
        args.json.write_text(json.dumps(outcomes, indent=2) + "\n")
    sys.exit(0 if passed == len(outcomes) else 1)


if __name__ == "__main__":
    main()
