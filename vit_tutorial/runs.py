"""The two ways in to training a run: `train_run`, what the command line and the sweep's workers call, and
`train_or_reuse`, what the chapters call (a finished run with the same configs if there is one, else a shipped
record, else train)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from . import distributed
from .checkpoint import CHECKSUM, load_checkpoint
from .config import RunOptions, TrainConfig
from .data import CIFAR10
from .errors import Interrupted, VitTutorialError, first_line, option, shown
from .evaluate import save_metrics, test_metrics
from .files import write_json
from .records import FinishedRun, find_finished_run, load_run_record
from .registry import build_model
from .run_folder import BEST, HISTORY, METRICS, RunFolder, runs_dir
from .run_state import FitResult
from .signals import exit_code
from .train import fit


def train_run(
    model: nn.Module,
    data: CIFAR10,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    options: RunOptions,
    test: bool = True,
) -> FitResult:
    """Train `model` into the run folder `out_dir` and, with `test`, score the chosen weights once on the test set
    (written to `out_dir/metrics.json`): the command line's `train` and the sweep's workers (`test=False`).

    Raises:
        Interrupted: on Ctrl-C or SIGTERM, saying what is kept and how to go on.
    """
    folder = RunFolder(out_dir)
    ranks = distributed.launched()
    leader = ranks is None or ranks.leader  # on several processes, rank 0 writes and prints
    print(
        f"data: {data.provenance['description']} from {data.provenance.get('root', '-')} "
        f"({len(data.train)} train / {len(data.val)} val / {len(data.test)} test)"
        + (f"; process {ranks.rank + 1} of {ranks.world}" if ranks else ""),
        flush=True,
    )
    try:
        result = fit(model, data, config, out_dir=folder.path, options=options)
    except KeyboardInterrupt as stop:
        raise Interrupted(f"interrupted; {_kept(folder)}", exit_code(stop)) from None
    except RuntimeError as error:  # on several processes: another one stopped, and its connection with it
        if ranks is None or not distributed.peer_lost(error):
            raise
        raise VitTutorialError(
            f"another process of this run stopped ({first_line(error, 100)}); {_kept(folder)}"
        ) from None
    if not leader:
        return result
    write_json(folder.path / HISTORY, [entry.to_dict() for entry in result.history])
    if not test:
        print(
            f"best epoch {result.best_epoch} (val accuracy {result.record.best_val_accuracy:.4f}); the test set was "
            f"left alone; wrote {shown(folder.path)}/best.pt, history.json",
            flush=True,
        )
        return result
    try:
        digest = load_checkpoint(folder.best)[CHECKSUM]
        metrics = test_metrics(
            result.model, data.test, result.record, device=options.device, checkpoint=BEST, checkpoint_sha256=digest
        )
    except KeyboardInterrupt as stop:
        raise Interrupted(
            f"interrupted during the test evaluation; training had finished and {shown(folder.best)} is written: "
            f"run `evaluate --checkpoint {shown(folder.best)}` to score it",
            exit_code(stop),
        ) from None
    save_metrics(metrics, folder.path / METRICS)
    print(
        f"best epoch {result.best_epoch} (val accuracy {result.record.best_val_accuracy:.4f}); "
        f"test accuracy {metrics['accuracy']:.4f}; wrote {shown(folder.path)}/best.pt, history.json, metrics.json"
    )
    return result


def _kept(folder: RunFolder) -> str:
    """What an interrupted run keeps, and how to go on."""
    if folder.last.is_file():
        return f"finished epochs are saved in {shown(folder.last)}: add {option('resume')} to continue"
    return "no epoch had finished, so nothing was saved"


def train_or_reuse(
    model_config: Any,
    train_config: TrainConfig,
    data: CIFAR10,
    *,
    out_dir: str | os.PathLike,
    record: str | None = None,
    reuse: bool = True,
    log=print,
    options: RunOptions | None = None,
) -> FinishedRun:
    """What a chapter that shows a trained model needs: a finished run with exactly these configs if one is on
    disk (the shipped checkpoint, or `runs/*/best.pt`), else the shipped run record named `record` (history and
    test predictions, no weights), else train into `out_dir` (under `runs_dir()` unless absolute) with `options`,
    resuming it if it was interrupted. `reuse=False` always trains (the quick mode). Says in one line which it
    did."""
    if reuse:
        found = find_finished_run(model_config, train_config)
        if found is not None:
            log(f"reusing {found.source}: {found.record.wall_seconds / 60:.0f} minutes on {found.record.hardware}")
            return found
        shipped = load_run_record(record) if record else None
        if shipped is not None:
            log(f"using the run record {record!r} shipped with the package (history and test predictions)")
            return shipped
    options = options or RunOptions()
    target = RunFolder(Path(runs_dir(), out_dir))
    unfinished = target.unfinished_run() if reuse else None
    resume = unfinished is not None and unfinished.is_run_of(model_config, train_config)
    model = build_model(model_config, train_config.seed)
    result = fit(
        model, data, train_config, out_dir=target.path, options=options.replace(resume=resume, overwrite=not resume)
    )
    trained = f"a run trained here into {target.path.name}/"
    log(f"{trained}: {len(result.history)} epochs, {result.record.wall_seconds / 60:.1f} min")
    return FinishedRun(result.record, result.model.eval(), trained, result.checkpoint)
