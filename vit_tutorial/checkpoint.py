"""Checkpoints: written atomically, loaded without executing pickled code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, saved with `torch.save`
and read back with `torch.load(..., weights_only=True)`, which refuses anything else. It carries both
configs, the history, the data provenance and the package version, so a model can be rebuilt and
its numbers traced from the file alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import FineTuneConfig, ResNetConfig, ViTConfig
from .errors import UNREADABLE_FILE_ERRORS, CheckpointError, first_line
from .finetune import FineTunedViT
from .model import ViT
from .resnet import ResNet

FORMAT = "vit_tutorial.checkpoint/1"
REQUIRED_KEYS = ("format", "version", "model_config", "model")
ARCHITECTURES = {  # checkpoints written before 0.2 hold no architecture: they are all "vit"
    "vit": (ViTConfig, ViT),
    "resnet": (ResNetConfig, ResNet),
    "vit_b_16": (FineTuneConfig, FineTunedViT),
}


def package_version() -> str:
    from . import __version__

    return __version__


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write `payload` (plus format and version) to `path` atomically: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        torch.save({"format": FORMAT, "version": package_version(), **payload}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`.

    Raises:
        CheckpointError: one line, if the file is missing, truncated, corrupt, or not a vit_tutorial checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: train one with `python -m vit_tutorial train` or pass --checkpoint PATH"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except UNREADABLE_FILE_ERRORS as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt: {first_line(error, 160)}); "
            f"re-run training or use another checkpoint"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a vit_tutorial checkpoint (expected format {FORMAT!r}, found {found!r})")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}; it is incomplete, re-run training to write a new one")
    return payload


def architecture_for(config: Any) -> str:
    """The architecture name of a model config: 'vit', 'resnet' or 'vit_b_16'."""
    for name, (config_class, _) in ARCHITECTURES.items():
        if isinstance(config, config_class):
            return name
    raise TypeError(f"no architecture is built from a {type(config).__name__}")


def architecture_of(payload: dict[str, Any], source: str = "checkpoint") -> str:
    """The model family a checkpoint holds: 'vit' or 'resnet'."""
    architecture = payload.get("architecture") or "vit"
    if architecture not in ARCHITECTURES:
        raise CheckpointError(f"{source} holds a {architecture!r} model; this package rebuilds {sorted(ARCHITECTURES)}")
    return architecture


def model_from_checkpoint(payload: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights; raises CheckpointError on a mismatch."""
    config_class, model_class = ARCHITECTURES[architecture_of(payload, source)]
    try:
        model = model_class(config_class.from_dict(payload["model_config"]))
        model.load_state_dict(payload["model"])
    except (ValueError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{source} does not match its model configuration ({first_line(error, 200)})") from None
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The model stored at `path`, in eval mode on `device`."""
    model = model_from_checkpoint(load_checkpoint(path), source=str(path))
    return model.to(device).eval()

