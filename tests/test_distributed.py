"""One run on two processes (DistributedDataParallel over gloo, started by torchrun, as on several GPUs): the
ranks keep the same weights, the run matches one process, one folder is written, and a killed rank ends it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from vit_tutorial.checkpoint import load_checkpoint

from .conftest import TINY_ARGS, write_image_folder

pytestmark = pytest.mark.slow

SCRIPT = """
import sys, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import TINY, make_split
from vit_tutorial import TrainConfig
from vit_tutorial.config import RunOptions
from vit_tutorial.data import CIFAR10
from vit_tutorial.registry import build_model
from vit_tutorial.train import fit

out = Path({out!r})
data = CIFAR10(make_split(200, 1), make_split(60, 2), make_split(60, 3), {{"source": "generated", "description": "g"}})
config = TrainConfig(epochs=2, batch_size=50, lr=0.05, warmup_epochs=1, val_size=60, augment="trivialaugment")

def keep(run, entry):
    torch.save(run.model.state_dict(), out / f"rank{{torch.distributed.get_rank()}}_epoch{{entry.epoch}}.pt")

options = RunOptions(device="cpu", progress=False, log=False, precision="fp32")
result = fit(build_model(TINY), data, config, out_dir=out / "run", options=options, on_epoch=keep)
torch.save([e.train_loss for e in result.history], out / f"rank{{torch.distributed.get_rank()}}_losses.pt")
"""


def torchrun(*args: str, env=None, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args]
    environment = {**(env or os.environ), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def test_two_ranks_keep_the_same_weights_and_match_one_process(fake_data, tmp_path):
    script = tmp_path / "two.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path))))
    process = torchrun(str(script))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    for epoch in (1, 2):
        first = torch.load(tmp_path / f"rank0_epoch{epoch}.pt")
        second = torch.load(tmp_path / f"rank1_epoch{epoch}.pt")
        for name, value in first.items():
            assert torch.equal(value, second[name]), name  # the same step on both ranks
    # one folder, written by rank 0, whose record says how it trained
    stored = load_checkpoint(tmp_path / "run" / "best.pt")
    assert "2 processes (DistributedDataParallel)" in stored["hardware"]
    # the same run as in one process, up to the order of the sums
    from vit_tutorial import TrainConfig
    from vit_tutorial.config import RunOptions
    from vit_tutorial.registry import build_model
    from vit_tutorial.train import fit

    from .conftest import TINY

    config = TrainConfig(epochs=2, batch_size=50, lr=0.05, warmup_epochs=1, val_size=60, augment="trivialaugment")
    options = RunOptions(device="cpu", progress=False, log=False, precision="fp32")
    alone = fit(build_model(TINY), fake_data, config, options=options)
    assert torch.load(tmp_path / "rank0_losses.pt") == pytest.approx([e.train_loss for e in alone.history], rel=1e-4)
    for name, value in alone.model.state_dict().items():
        torch.testing.assert_close(stored["model"][name], value, rtol=1e-3, atol=1e-5)


def _worker_pids(parent: int) -> dict[int, int]:
    """The training processes torchrun started, by rank."""
    found = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if int(fields.get("PPid", "0")) != parent:
                continue
            environment = (status.parent / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        for item in environment:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(status.parent.name)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks' processes through /proc")
def test_a_killed_rank_ends_the_run_and_the_finished_epochs_are_kept(tmp_path):
    root = write_image_folder(tmp_path / "cifar", per_class=12)
    env = {**os.environ, "VIT_TUTORIAL_CACHE": str(tmp_path / "cache"), "VIT_TUTORIAL_DATA": str(root)}
    out = tmp_path / "run"
    args = ["-m", "vit_tutorial", "train", "--out", str(out), "--epochs", "500", "--no-progress", *TINY_ARGS]
    process = torchrun(*args, env=env)
    try:
        deadline = time.monotonic() + 240
        while not (out / "last.pt").is_file() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert (out / "last.pt").is_file(), "no epoch finished"
        ranks = _worker_pids(process.pid)
        assert sorted(ranks) == [0, 1]
        os.kill(ranks[1], signal.SIGKILL)
        _, stderr = process.communicate(timeout=120)  # torchrun stops rank 0 and ends
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert not _worker_pids(process.pid)
    said = [line for line in stderr.splitlines() if line.startswith("vit-tutorial train:")]  # rank 0's own words
    assert len(said) == 1 and "unexpected" not in said[0] and "--resume" in said[0], stderr[-2000:]
    kept = load_checkpoint(out / "last.pt")  # whole: written atomically by rank 0
    assert 1 <= kept["epochs_run"] < 500
