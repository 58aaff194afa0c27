"""Training runs on disk: where they live, and finding a finished one to reuse instead of retraining."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import pretrained
from .checkpoint import load_checkpoint, stored_architecture
from .config import TrainConfig
from .errors import CheckpointError
from .registry import spec_for

RUNS_ENV = "VIT_TUTORIAL_RUNS"
_CHECKOUT = Path(__file__).resolve().parent.parent
RECORDS = Path(__file__).parent / "pretrained"  # run records shipped with the package: <name>_run.json
RECORD_KEYS = (
    "architecture",
    "model_config",
    "train_config",
    "history",
    "best_epoch",
    "best_val_accuracy",
    "hardware",
    "wall_seconds",
    "epochs_run",
    "stopped_early",
    "note",
)


def runs_dir() -> Path:
    """Where training runs live, so that notebooks (run from notebooks/) and the command line (run from the
    checkout) find the same ones: $VIT_TUTORIAL_RUNS when set, else `runs/` in the source checkout,
    else `runs/` in the working directory (an installed, not editable, package)."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]).expanduser()
    if (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT / "runs"
    return Path("runs")


def find_finished_run(
    model_config: Any, train_config: TrainConfig, runs: str | Path | None = None
) -> dict[str, Any] | None:
    """A finished run trained with exactly these configs: the shipped checkpoint, else `runs/*/best.pt`
    (default: `runs_dir()`).

    Returns the checkpoint's contents (weights included) with its "path", or None when no run matches.
    """
    candidates = [pretrained.PRETRAINED] if pretrained.pretrained_available() else []
    candidates += sorted(Path(runs if runs is not None else runs_dir()).glob("*/best.pt"))
    wanted = spec_for(model_config)
    for path in candidates:
        try:
            payload = load_checkpoint(path)
            same = (
                stored_architecture(payload) == wanted.name
                and wanted.config_class.from_dict(payload["model_config"]) == model_config
                and TrainConfig.from_dict(payload.get("train_config") or {}) == train_config
            )
        except (ValueError, TypeError, CheckpointError):
            continue  # unreadable, or written by another version of the configs
        if same:
            return {**payload, "path": str(path)}
    return None


def run_record(payload: dict[str, Any], model: Any, data: Any, note: str = "") -> dict[str, Any]:
    """A finished run without its weights: configs, history, hardware, data provenance (no local path), its
    test metrics, and its prediction for every test image (so that per-image comparisons need no weights)."""
    from .evaluate import evaluate, predict_logits

    record = {key: payload[key] for key in RECORD_KEYS if key in payload}
    record.update(
        architecture=stored_architecture(payload),
        note=note or payload.get("note", ""),
        provenance={k: v for k, v in data.provenance.items() if k != "root"},
        test_metrics=evaluate(model, data.test),
        test_predictions="".join(str(p) for p in predict_logits(model, data.test).argmax(1).tolist()),
    )
    return record


def _record_path(name: str, kind: str, folder: str | Path | None) -> Path:
    return Path(folder or RECORDS) / f"{name}_{kind}.json"


def _write_record(record: dict[str, Any], name: str, kind: str, folder: str | Path | None) -> Path:
    from .files import write_json

    return write_json(_record_path(name, kind, folder), record)


def _read_record(
    name: str, kind: str, folder: str | Path | None, convert=lambda record: record
) -> dict[str, Any] | None:
    """A shipped `<name>_<kind>.json` through `convert`, None when there is none, one line when it is unreadable."""
    import json

    path = _record_path(name, kind, folder)
    if not path.is_file():
        return None
    try:
        return convert(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path} is not a readable {kind} record ({error}); restore it from the repository"
        ) from None


def write_run_record(record: dict[str, Any], name: str, folder: str | Path | None = None) -> Path:
    return _write_record(record, name, "run", folder)


def load_run_record(name: str, folder: str | Path | None = None) -> dict[str, Any] | None:
    """A shipped run record (`<name>_run.json`), or None when there is none. Its `test_predictions` come back
    as a tensor of class indices."""
    import torch

    def with_tensor(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "test_predictions": torch.tensor([int(c) for c in record["test_predictions"]])}

    return _read_record(name, "run", folder, with_tensor)


SWEEP_KEYS = ("recipe", "overrides", "status", "best_val_accuracy", "best_epoch", "epochs_run", "wall_seconds")


def sweep_record(results: dict[str, Any], grid: str, note: str = "") -> dict[str, Any]:
    """A sweep's `results.json` made small enough to ship: every recipe's settings and scores, the shared
    base of the grid, and per-epoch training and validation accuracy; no run-folder paths, no weights."""
    rows = results["recipes"]
    finished = [row for row in rows if row["status"] == "finished"]
    recipes = []
    for row in rows:
        compact = {key: row[key] for key in SWEEP_KEYS if key in row}
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
    return _write_record(record, name, "sweep", folder)


def load_sweep_record(name: str, folder: str | Path | None = None) -> dict[str, Any] | None:
    """A shipped sweep record (`<name>_sweep.json`), or None when there is none."""
    return _read_record(name, "sweep", folder)
