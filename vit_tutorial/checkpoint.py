"""Checkpoints: written atomically, checksummed, loaded without executing pickled code, checked against a schema.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, saved with `torch.save`
and read back with `torch.load(..., weights_only=True)`, which refuses anything else. It carries the
run's record (`record.RunRecord`: both configs, the history, the data provenance) and the package
version, so a model can be rebuilt and its numbers traced from the file alone. A SHA-256 digest of its
whole content, written at save time, is checked at load time, so damaged bytes are refused instead of
used. The schema follows from the record's fields;
the configs are validated as the configs themselves validate; weights must be finite.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .data import CLASSES
from .errors import UNREADABLE_FILE_ERRORS, CheckpointError, first_line, shown
from .files import write_atomically
from .record import CHECKPOINT_SCHEMA, RunRecord
from .registry import MODELS, spec_named

FORMAT = "vit_tutorial.checkpoint/1"
CHECKSUM = "content_sha256"
REQUIRED_KEYS = ("format", "version", CHECKSUM, "architecture", "model_config", "model")
WEIGHTS = ("model", "best_model", "ema")
# The type of every field a checkpoint of this package may hold: the record's, what resuming needs, and these.
SCHEMA: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "version": (str,),
    CHECKSUM: (str,),
    **CHECKPOINT_SCHEMA,
    "architecture": (str,),
}


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write `payload` (plus format, version and checksum) to `path` atomically: a crash or Ctrl-C while
    writing leaves the old file intact and no partial file behind.

    Raises:
        CheckpointError: the file cannot be written (a folder in the way, no permission, a full disk).
    """
    content = {"format": FORMAT, "version": __version__, **payload}
    content[CHECKSUM] = content_digest(content)
    return write_atomically(
        path,
        lambda handle: torch.save(content, handle),
        error=CheckpointError,
        advice="choose another --out or free some space",
    )


def content_digest(content: dict[str, Any]) -> str:
    """SHA-256 of everything in `content` but the checksum itself: every tensor's dtype, shape and bytes,
    and every other value's repr, walked in order."""
    digest = hashlib.sha256()

    def feed(where: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{where}:{tensor.dtype}:{tuple(value.shape)}:".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            for key, item in value.items():
                feed(f"{where}/{key!r}", item)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                feed(f"{where}[{i}]", item)
        else:
            digest.update(f"{where}={value!r};".encode())

    for key, value in content.items():
        if key != CHECKSUM:
            feed(key, value)
    return digest.hexdigest()


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, refusing anything damaged or malformed.

    Raises:
        CheckpointError: one line, if the file is missing, truncated, corrupt, damaged (checksum), not a
            vit_tutorial checkpoint, or holds fields of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: train one with `python -m vit_tutorial train` or pass --checkpoint PATH"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{shown(path)} is not a readable checkpoint: {first_line(error)}") from None
    except UNREADABLE_FILE_ERRORS as error:
        raise CheckpointError(
            f"{shown(path)} is not a readable checkpoint (truncated or corrupt: {first_line(error, 160)}); "
            f"re-run training or use another checkpoint"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a vit_tutorial checkpoint (expected format {FORMAT!r}, found {found!r})")
    if CHECKSUM in payload and payload[CHECKSUM] != content_digest(payload):  # a missing one: check_schema
        raise CheckpointError(
            f"{path} is damaged: its content does not match the checksum written with it; "
            f"re-run training or use another copy"
        )
    check_schema(payload, str(path))
    return payload


def check_schema(payload: dict[str, Any], source: str = "checkpoint") -> None:
    """Required fields present, every known field of its type, weights all tensors, a CIFAR-10 model config."""
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{source} lacks {missing}; it is incomplete, re-run training to write a new one")
    for key, types in SCHEMA.items():
        value = payload.get(key, types[0]())
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):  # True is an int too
            expected = " or ".join(t.__name__ for t in types)
            raise CheckpointError(
                f"{source}: field {key!r} should be {expected}, found {type(value).__name__}; "
                f"the file is damaged or was not written by vit_tutorial"
            )
    for key in WEIGHTS:
        bad = [name for name, value in payload.get(key, {}).items() if not isinstance(value, torch.Tensor)]
        if bad:
            raise CheckpointError(f"{source}: {key} entry {bad[0]!r} is not a tensor; the file is damaged")
        unnamed = [name for name in payload.get(key, {}) if not isinstance(name, str)]
        if unnamed:
            raise CheckpointError(
                f"{source}: {key} has an entry named {unnamed[0]!r}, not a weight's name; the file is damaged"
            )
        wrong = [(name, value.dtype) for name, value in payload.get(key, {}).items() if not _weight_dtype(name, value)]
        if wrong:
            name, dtype = wrong[0]
            raise CheckpointError(
                f"{source}: {key} weight {name!r} is {str(dtype).removeprefix('torch.')}, not a floating-point "
                "weight; the file is damaged or was not written by vit_tutorial"
            )
        broken = [
            name
            for name, value in payload.get(key, {}).items()
            if value.is_floating_point() and not torch.isfinite(value).all()
        ]
        if broken:
            raise CheckpointError(
                f"{source}: {key} weight {broken[0]!r} holds NaN or infinite values (a diverged run or a damaged "
                "file); use an earlier checkpoint or train again"
            )
    architecture = stored_architecture(payload, source)
    try:
        config = MODELS[architecture].config_class.from_dict(payload["model_config"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{source}: its model configuration is invalid ({first_line(error, 200)})") from None
    try:
        RunRecord.from_dict(payload)
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{source}: its training configuration is invalid ({first_line(error, 200)})") from None
    if config.num_classes != len(CLASSES):
        raise CheckpointError(
            f"{source} holds a {config.num_classes}-class model; this package's models classify the "
            f"{len(CLASSES)} CIFAR-10 classes"
        )


def _weight_dtype(name: str, value: torch.Tensor) -> bool:
    """Weights are real floating-point numbers; the one integer a model keeps is batch norm's step count."""
    if value.is_floating_point():
        return True
    return name.endswith("num_batches_tracked") and value.dtype == torch.long


def stored_architecture(payload: dict[str, Any], source: str = "checkpoint") -> str:
    """The model a checkpoint holds, by its registry name."""
    architecture = payload.get("architecture")
    if architecture not in MODELS:
        raise CheckpointError(f"{source} holds a {architecture!r} model; this package rebuilds {sorted(MODELS)}")
    return architecture


def model_from_checkpoint(payload: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights; raises CheckpointError on a mismatch."""
    spec = spec_named(stored_architecture(payload, source))
    try:
        model = spec.model_class()(spec.config_class.from_dict(payload["model_config"]))
        model.load_state_dict(payload["model"])
    except (ValueError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{source} does not match its model configuration ({first_line(error, 200)})") from None
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The model stored at `path`, in eval mode on `device`."""
    model = model_from_checkpoint(load_checkpoint(path), source=str(path))
    return model.to(device).eval()
