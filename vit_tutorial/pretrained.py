"""The checkpoint shipped inside the package, so readers can skip training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint, model_from_checkpoint
from .errors import CheckpointError
from .model import ViT
from .record import RunRecord

PRETRAINED = Path(__file__).parent / "pretrained" / "vit_cifar10.pt"


def pretrained_available() -> bool:
    """True when this install ships a trained checkpoint."""
    return PRETRAINED.is_file()


def pretrained_record() -> RunRecord:
    """Everything the shipped checkpoint records except its weights: configs, history, provenance, test metrics."""
    return RunRecord.from_dict(_payload())


def load_pretrained() -> ViT:
    """The shipped trained ViT, in eval mode on the CPU.

    Raises:
        CheckpointError: when this install ships no checkpoint, or it is damaged.
    """
    model = model_from_checkpoint(_payload(), source=str(PRETRAINED)).eval()
    assert isinstance(model, ViT), "tools/ship_pretrained.py ships the book's ViT only"
    return model


def _payload() -> dict[str, Any]:
    if not pretrained_available():
        raise CheckpointError(
            "this install ships no pretrained checkpoint (vit_tutorial/pretrained/vit_cifar10.pt); "
            "train one with `python -m vit_tutorial train` and load it with vit_tutorial.checkpoint.load_model"
        )
    return load_checkpoint(PRETRAINED)
