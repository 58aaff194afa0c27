"""The checkpoint shipped inside the package, so readers can skip training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .checkpoint import architecture_for, architecture_of, load_checkpoint, model_from_checkpoint
from .config import FineTuneConfig, ResNetConfig, TrainConfig, ViTConfig
from .errors import CheckpointError
from .model import ViT

PRETRAINED = Path(__file__).parent / "pretrained" / "vit_cifar10.pt"
_CHECKOUT = Path(__file__).resolve().parent.parent


def runs_dir() -> Path:
    """Where training runs live, so that notebooks (run from notebooks/) and the command line (run from the
    checkout) find the same ones: $VIT_TUTORIAL_RUNS when set, else `runs/` in the source checkout,
    else `runs/` in the working directory (an installed, not editable, package)."""
    if os.environ.get("VIT_TUTORIAL_RUNS"):
        return Path(os.environ["VIT_TUTORIAL_RUNS"])
    if (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT / "runs"
    return Path("runs")


def pretrained_available() -> bool:
    """True when this install ships a trained checkpoint."""
    return PRETRAINED.is_file()


def pretrained_info() -> dict[str, Any]:
    """Everything the shipped checkpoint records except its weights: configs, history, provenance, metrics."""
    return {key: value for key, value in _payload().items() if key not in ("model",)}


def load_pretrained() -> ViT:
    """The shipped trained ViT, in eval mode on the CPU.

    Raises:
        CheckpointError: when this install ships no checkpoint, or it is damaged.
    """
    return model_from_checkpoint(_payload(), source=str(PRETRAINED)).eval()


def _payload() -> dict[str, Any]:
    if not pretrained_available():
        raise CheckpointError(
            "this install ships no pretrained checkpoint (vit_tutorial/pretrained/vit_cifar10.pt); "
            "train one with `python -m vit_tutorial train` and load it with vit_tutorial.checkpoint.load_model"
        )
    return load_checkpoint(PRETRAINED)


def find_finished_run(
    model_config: ViTConfig | ResNetConfig | FineTuneConfig, train_config: TrainConfig, runs: str | Path | None = None
) -> dict[str, Any] | None:
    """A finished run trained with exactly these configs: the shipped checkpoint, else `runs/*/best.pt`
    (default: `runs_dir()`).

    Returns the checkpoint's contents (weights included), or None when no run matches.
    """
    candidates = [PRETRAINED] if pretrained_available() else []
    candidates += sorted(Path(runs if runs is not None else runs_dir()).glob("*/best.pt"))
    for path in candidates:
        try:
            payload = load_checkpoint(path)
        except CheckpointError:
            continue
        try:
            same = (architecture_of(payload) == architecture_for(model_config)
                    and type(model_config).from_dict(payload["model_config"]) == model_config
                    and TrainConfig.from_dict(payload.get("train_config") or {}) == train_config)  # fmt: skip
        except (ValueError, TypeError, CheckpointError):
            continue  # written by another version of the configs
        if same:
            return {**payload, "path": str(path)}
    return None
