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
