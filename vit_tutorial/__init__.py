"""Vision Transformers from scratch on CIFAR-10: the package the tutorial book builds.

The names that need torch (the models, `load_pretrained`) are imported on first use, so that `import
vit_tutorial` is quick and the command line can answer Ctrl-C and SIGTERM while torch is still loading.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import ResNetConfig, TrainConfig, ViTConfig, building_book, quick_mode
from .errors import CheckpointError, DataNotFoundError, ImageError, TrainingDivergedError, VitTutorialError

if TYPE_CHECKING:
    from .model import ViT, count_parameters
    from .pretrained import load_pretrained, pretrained_available
    from .resnet import ResNet

_ON_FIRST_USE = {
    "ViT": "model",
    "count_parameters": "model",
    "load_pretrained": "pretrained",
    "pretrained_available": "pretrained",
    "ResNet": "resnet",
}


def __getattr__(name: str) -> Any:
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_ON_FIRST_USE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CheckpointError",
    "DataNotFoundError",
    "ImageError",
    "ResNet",
    "ResNetConfig",
    "TrainConfig",
    "TrainingDivergedError",
    "ViT",
    "ViTConfig",
    "VitTutorialError",
    "__version__",
    "building_book",
    "count_parameters",
    "load_pretrained",
    "pretrained_available",
    "quick_mode",
]
