"""Run folders: where runs live, and the rules for writing one.

A run folder holds `last.pt` (rewritten after every epoch, resumable), `best.pt` and `history.json` (at the
end), `metrics.json` (the test-set score the command line adds) and, if asked for, `snapshots/epoch_NNNN.pt`.
`RunFolder` owns the rules:

- a folder is written by one process at a time: it is locked for the life of the run (an advisory lock
  that dies with its process, so a killed run never blocks the next), and a second writer is refused with
  one line naming the process that holds it;
- a folder that holds a run is refused unless the run is resumed or replaced (`overwrite`, which first
  removes every file of the old run);
- a run resumes only with the same configs (a lower `lr`, another `grad_clip`, and more or fewer `epochs` for
  a constant rate excepted, and recorded) and on the same data;
- nothing non-finite is ever saved (`check_finite`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .errors import CheckpointError, RunInUseError, TrainingDivergedError, first_line, option, shown
from .record import EpochEntry, RunRecord

RUNS_ENV = "VIT_TUTORIAL_RUNS"
_CHECKOUT = Path(__file__).resolve().parent.parent
LAST, BEST, HISTORY, METRICS = "last.pt", "best.pt", "history.json", "metrics.json"
SNAPSHOTS = "snapshots"  # epoch_NNNN.pt: copies of last.pt kept along the way (`RunOptions.snapshot_every`)
LOCK = ".lock"
# What a resumed run may change: the rate or clipping, e.g. after a divergence; the length of a constant-rate run.
RESUMABLE_CHANGES = ("lr", "grad_clip", "epochs")
DATA_IDENTITY = ("source", "fingerprint", "val_size", "split_seed", "subset")


def runs_dir() -> Path:
    """Where training runs live, so that notebooks (run from notebooks/) and the command line (run from the
    checkout) find the same ones: $VIT_TUTORIAL_RUNS when set, else `runs/` in the source checkout,
    else `runs/` in the working directory (an installed, not editable, package)."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]).expanduser()
    if (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT / "runs"
    return Path("runs")


# Locks ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(folder: Path, what: str = "a run") -> Iterator[None]:
    """Hold `folder`'s lock for the duration, creating the folder; `what` says what holds it, for the message
    a second writer gets.

    Raises:
        RunInUseError: another process holds the lock.
        CheckpointError: the folder cannot be created or written.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one writer per folder is up to the user
        yield
        return
    handle = _open_lock(folder)
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunInUseError(
                f"{shown(folder)} is in use by {holder}; wait for it to finish or stop it, or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        handle.write(f"process {os.getpid()} ({what}: {command}, since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


def _open_lock(folder: Path):
    """The folder's lock file, opened for reading and writing: a file of its own, never followed through a link
    (whose target the lock would overwrite).

    Raises:
        CheckpointError: the folder cannot be created or written, or its lock is a link.
    """
    lock = folder / LOCK
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as error:
        if lock.is_symlink():
            raise CheckpointError(
                f"{shown(lock)} is a link, not a lock of its own; remove the link (what it points to is left alone)"
            ) from None
        raise CheckpointError(
            f"cannot write {shown(folder)} ({error.strerror or first_line(error)}); choose another run folder (--out)"
        ) from None
    if os.fstat(descriptor).st_nlink > 1:
        os.close(descriptor)
        raise CheckpointError(
            f"{shown(lock)} is a hard link to another file, not a lock of its own; remove it (the other file stays)"
        )
    return os.fdopen(descriptor, "a+")


# Run folders -----------------------------------------------------------------------------------------------


class RunFolder:
    """One run's folder: its lock, its files, and the rules for starting, resuming and replacing a run."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    def run_files(self) -> list[Path]:
        """The files of a run in this folder: checkpoints, history and every metrics file."""
        names = [self.path / name for name in (LAST, BEST, HISTORY, METRICS)]
        kept = sorted(self.path.glob("metrics-*.json")) + sorted(self.path.glob(f"{SNAPSHOTS}/epoch_*.pt"))
        return [path for path in names if path.exists()] + kept

    def snapshot(self, epoch: int) -> Path:
        return self.path / SNAPSHOTS / f"epoch_{epoch:04d}.pt"

    @contextlib.contextmanager
    def writing(self, *, resume: bool, overwrite: bool) -> Iterator[RunFolder]:
        """Hold the folder for a run: locked, and claimed (refused if it holds a run, unless `overwrite`)
        unless the run resumes."""
        with locked(self.path):
            if not resume:
                self.claim(overwrite)
            yield self

    def claim(self, overwrite: bool) -> None:
        """Refuse a folder that holds a run (finished or not), unless `overwrite`: then remove that run's files
        first, so that an interrupted retrain never leaves a mix of the old run and the new one."""
        existing = self.run_files()
        if not existing:
            return
        if not overwrite:
            raise CheckpointError(
                f"{shown(self.path)} already holds a run ({', '.join(p.name for p in existing)}); add "
                f"{option('resume')} to continue it, {option('overwrite')} to replace it, or choose another folder"
            )
        for path in existing:
            path.unlink()

    def resume(self, run) -> None:
        """Load `last.pt` into `run` (a `train.Run`), after checking it was written with the same configs and data.

        Raises:
            CheckpointError: nothing to resume, another configuration or data set, or state that does not fit.
        """
        if not self.last.is_file():
            raise CheckpointError(
                f"nothing to resume: no {LAST} in {shown(self.path)}; start without {option('resume')}"
            )
        payload = load_checkpoint(self.last)
        changes = resumable_changes(self.last, payload, run.config, run.record.model_config)
        check_same_data(self.last, payload.get("provenance") or {}, run.record.provenance)
        try:
            run.restore(payload, changes)
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"{shown(self.last)} cannot be resumed ({first_line(error, 160)}); train into another folder"
            ) from None

    def unfinished_run(self) -> RunRecord | None:
        """The record of the interrupted run this folder holds (a readable `last.pt`, no `best.pt`), or None."""
        if self.best.is_file() or not self.last.is_file():
            return None
        try:
            return RunRecord.from_dict(load_checkpoint(self.last))
        except (ValueError, TypeError, KeyError, CheckpointError):
            return None

    def save_last(self, run) -> Path:
        return save_checkpoint(self.last, run.last_state())

    def save_snapshot(self, run) -> Path:
        """A copy of `last.pt` that later epochs do not overwrite: a point to branch a cooldown from."""
        return save_checkpoint(self.snapshot(run.record.epochs_run), run.last_state())

    def save_best(self, run) -> Path:
        """best.pt: the record and the best weights."""
        return save_checkpoint(self.best, run.best_state())


def resumable_changes(path: Path, payload: dict[str, Any], config: TrainConfig, model_config: Any) -> dict[str, list]:
    """What a resume changes ({field: [then, now]}, only fields in RESUMABLE_CHANGES); refuses anything else."""
    stored = stored_record(path, payload, model_config)
    then = stored.train_config
    changes = {
        k: [getattr(then, k), getattr(config, k)] for k in RESUMABLE_CHANGES if getattr(then, k) != getattr(config, k)
    }
    if then.replace(**{k: getattr(config, k) for k in changes}) != config:
        differing = [k for k in TrainConfig.__dataclass_fields__ if getattr(then, k) != getattr(config, k)]
        raise CheckpointError(
            f"{shown(path)} was written with another training configuration ({', '.join(differing)} differ); resume "
            f"with the same options (only {option('lr')} and {option('grad_clip')} may change, and "
            f"{option('epochs')} of a constant rate) or train into another folder"
        )
    if "epochs" in changes and (then.schedule != "constant" or then.cooldown_epochs):
        raise CheckpointError(
            f"{shown(path)} was written with another training configuration (epochs differ): the shape of its "
            f"{then.schedule} schedule{' with a cooldown' if then.cooldown_epochs else ''} depends on its length; "
            f"resume with {option('epochs', then.epochs)} (only a constant rate can be extended)"
        )
    if config.epochs < stored.epochs_run:
        raise CheckpointError(
            f"{shown(path)} has already run {stored.epochs_run} epochs; "
            f"resume with {option('epochs', stored.epochs_run)} or more"
        )
    return changes


def stored_record(path: Path, payload: dict[str, Any], model_config: Any) -> RunRecord:
    """The record in `payload`, which must be of a run of `model_config`."""
    try:
        stored = RunRecord.from_dict(payload)
    except (ValueError, TypeError, KeyError):
        stored = None
    if stored is None or stored.model_config != model_config:
        raise CheckpointError(
            f"{shown(path)} holds another model configuration; use the same model options or another checkpoint"
        )
    return stored


def check_same_data(path: Path, stored: dict, current: dict) -> None:
    """A run resumes on the data it started with: another data set, split or subset would change what the
    validation accuracy measures halfway through."""
    differing = [key for key in DATA_IDENTITY if stored.get(key) != current.get(key)]
    if differing:
        described = ", ".join(f"{k}: {stored.get(k)!r} then, {current.get(k)!r} now" for k in differing)
        raise CheckpointError(
            f"{shown(path)} was trained on other data ({described}); resume with the same data options "
            f"(data, subset, val_size and seed) or train into another folder"
        )


def check_finite(entry: EpochEntry, model: nn.Module, folder: RunFolder | None) -> None:
    """Stop before anything non-finite is saved, and say truthfully what is kept and how to go on."""
    weights_finite = math.isfinite(sum(p.detach().float().sum().item() for p in model.parameters()))
    bad = [name for name in ("train_loss", "val_loss") if not math.isfinite(getattr(entry, name))]
    if weights_finite and not bad:
        return
    what = f"{bad[0].replace('_', ' ')} became {getattr(entry, bad[0])}" if bad else "the weights became non-finite"
    if folder is not None and folder.last.is_file():
        good = RunRecord.from_dict(load_checkpoint(folder.last)).epochs_run
        kept = f"{shown(folder.last)} still holds the last good epoch ({good})"
        advice = f"continue from it with {option('resume')} and a lower {option('lr')} (or {option('grad_clip')})"
    elif folder is not None:
        kept, advice = (
            "no epoch finished, so no checkpoint was written",
            f"start again with a lower {option('lr')} (or {option('grad_clip')})",
        )
    else:
        kept, advice = "nothing was being saved", "train again with a lower learning rate or gradient clipping"
    raise TrainingDivergedError(f"{what} in epoch {entry.epoch}; {kept}; {advice}")
