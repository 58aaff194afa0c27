"""Finished runs a chapter can show: a run on disk with the same configs, or a record shipped with the package.

A shipped run record (`pretrained/<name>_run.json`) is a finished run without its weights: configs,
history, hardware, data provenance, test metrics and the prediction for every test image (`run_record`);
a shipped sweep record (`<name>_sweep.json`) a grid's table and accuracy curves (`sweep_record`); a shipped
benchmark (`<name>_benchmark.json`) what `benchmarks/train_throughput.py` measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import pretrained
from .checkpoint import load_checkpoint, model_from_checkpoint, stored_architecture
from .config import TrainConfig
from .diagnostics import Diagnostics, probe_images
from .errors import CheckpointError, first_line
from .evaluate import evaluate, predict_logits
from .files import write_json
from .record import EpochEntry, RunRecord
from .registry import spec_for
from .run_folder import runs_dir

RECORDS = Path(__file__).parent / "pretrained"  # run records shipped with the package: <name>_run.json
# What a shipped sweep record keeps of each recipe's row
SHIPPED_ROW = ("recipe", "overrides", "status", "best_val_accuracy", "best_epoch", "epochs_run", "wall_seconds")


@dataclass
class FinishedRun:
    """A run that a notebook can show: its record, and its model where the weights are at hand."""

    record: RunRecord
    model: nn.Module | None  # None for a shipped record, which has no weights
    source: str  # where it came from, in words
    path: Path | None = None  # the checkpoint or record file
    test_predictions: torch.Tensor | None = None  # a shipped record's prediction for every test image

    @property
    def history(self) -> list[EpochEntry]:
        return self.record.history


def find_finished_run(
    model_config: Any, train_config: TrainConfig, runs: str | Path | None = None
) -> FinishedRun | None:
    """A finished run trained with exactly these configs: the shipped checkpoint, else `runs/*/best.pt`
    (default: `runs_dir()`), with its weights loaded; None when no run matches."""
    candidates = [pretrained.PRETRAINED] if pretrained.pretrained_available() else []
    candidates += sorted(Path(runs if runs is not None else runs_dir()).glob("*/best.pt"))
    wanted = spec_for(model_config)
    for path in candidates:
        try:
            payload = load_checkpoint(path)
            record = RunRecord.from_dict(payload)
            same = (
                stored_architecture(payload) == wanted.name
                and record.model_config == model_config
                and record.train_config == train_config
            )
            if same:
                model = model_from_checkpoint(payload, str(path)).eval()
                where = (
                    "the checkpoint shipped with the package"
                    if path == pretrained.PRETRAINED
                    else (f"the finished run {path.parent.name}/{path.name} in the runs folder")
                )
                return FinishedRun(record, model, where, path)
        except (ValueError, TypeError, KeyError, CheckpointError):
            continue  # unreadable, or written by another version of the configs
    return None


def run_record(payload: dict[str, Any], model: Any, data: Any, note: str = "") -> dict[str, Any]:
    """A finished run without its weights: its record (configs, history, hardware, data provenance without the
    local path), its test metrics, and its prediction for every test image (so that per-image comparisons
    need no weights). A run that predates the per-epoch diagnostics gets those of its kept weights in its best
    epoch's entry, marked `measured_after_training`, so that a chapter can show them without the weights."""
    record = RunRecord.from_dict(payload)
    best = record.history[record.best_epoch - 1] if 0 < record.best_epoch <= len(record.history) else None
    diagnostics = Diagnostics(probe_images(record.model_config, data.val), None)
    if best is not None and best.cls_spread is None and diagnostics.probe is not None:
        for key, value in diagnostics.of_weights(model).items():
            setattr(best, key, value)
        best.measured_after_training = True
    record.note = note or record.note
    record.provenance = {k: v for k, v in data.provenance.items() if k != "root"}
    record.test_metrics = evaluate(model, data.test)
    predictions = "".join(str(p) for p in predict_logits(model, data.test).argmax(1).tolist())
    return {**record.shipped(), "test_predictions": predictions}


def _record_path(name: str, kind: str, folder: str | Path | None) -> Path:
    return Path(folder or RECORDS) / f"{name}_{kind}.json"


def _read_record(name: str, kind: str, folder: str | Path | None) -> dict[str, Any] | None:
    """A shipped `<name>_<kind>.json`, None when there is none, one line when it is unreadable."""
    path = _record_path(name, kind, folder)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable {kind} record ({error}); restore it from the repository"
        ) from None


def write_run_record(record: dict[str, Any], name: str, folder: str | Path | None = None) -> Path:
    return write_json(_record_path(name, "run", folder), record)


def load_run_record(name: str, folder: str | Path | None = None) -> FinishedRun | None:
    """A shipped run record (`<name>_run.json`) as a `FinishedRun` without a model, or None when there is none.
    (The record of a run still in progress has no test predictions.)"""
    values = _read_record(name, "run", folder)
    if values is None:
        return None
    try:
        record = RunRecord.from_dict(values)
        shipped = values.get("test_predictions")  # a run in progress ships no test predictions
        predictions = torch.tensor([int(c) for c in shipped]) if shipped is not None else None
    except (ValueError, TypeError, KeyError) as error:
        path = _record_path(name, "run", folder)
        raise CheckpointError(
            f"{path} is not a readable run record ({first_line(error)}); restore it from the repository"
        ) from None
    return FinishedRun(record, None, f"the run record {name!r}", _record_path(name, "run", folder), predictions)


def sweep_record(results: dict[str, Any], grid: str, note: str = "") -> dict[str, Any]:
    """A sweep's `results.json` made small enough to ship: every recipe's settings and scores, the shared
    base of the grid, and per-epoch training and validation accuracy; no run-folder paths, no weights."""
    rows = results["recipes"]
    finished = [row for row in rows if row["status"] == "finished"]
    recipes = []
    for row in rows:
        compact = {key: row[key] for key in SHIPPED_ROW if key in row}
        if row["status"] == "finished":
            compact.update(
                train_images_per_second=round(row["images_per_second"]),
                train_accuracy=[round(h["train_accuracy"], 4) for h in row["history"]],
                val_accuracy=[round(h["val_accuracy"], 4) for h in row["history"]],
            )
        else:
            compact["error"] = row.get("error", "")
        recipes.append(compact)
    first = finished[0] if finished else rows[0]
    return {
        "grid": grid,
        "note": note,
        "base_train_config": _shared_base(rows, "train_config"),
        "model": first["model"],
        "model_config": _shared_base(rows, "model_config"),
        "hardware": first.get("hardware", ""),
        "provenance": {k: v for k, v in first.get("provenance", {}).items() if k != "root"},
        "recipes": recipes,
    }


def _shared_base(rows: list[dict[str, Any]], part: str) -> dict[str, Any]:
    """The grid's base settings of one config: each setting as a recipe that does not override it has it
    (a setting every recipe overrides has no base value to report, and is left out)."""
    base = {}
    for key in rows[0][part]:
        plain = next((row for row in rows if key not in row["overrides"]), None)
        if plain is not None:
            base[key] = plain[part][key]
    return base


def write_sweep_record(record: dict[str, Any], name: str, folder: str | Path | None = None) -> Path:
    return write_json(_record_path(name, "sweep", folder), record)


def load_sweep_record(name: str, folder: str | Path | None = None) -> dict[str, Any] | None:
    """A shipped sweep record (`<name>_sweep.json`), or None when there is none."""
    return _read_record(name, "sweep", folder)


def load_benchmark(name: str, folder: str | Path | None = None) -> dict[str, Any] | None:
    """Shipped results of `benchmarks/train_throughput.py` (`<name>_benchmark.json`), or None."""
    return _read_record(name, "benchmark", folder)
