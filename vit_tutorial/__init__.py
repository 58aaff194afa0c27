"""Vision Transformers from scratch on CIFAR-10: the package the tutorial book builds."""

from ._version import __version__
from .config import ResNetConfig, TrainConfig, ViTConfig, building_book, quick_mode
from .errors import CheckpointError, DataNotFoundError, ImageError, TrainingDivergedError, VitTutorialError
from .model import ViT, count_parameters
from .pretrained import load_pretrained, pretrained_available
from .resnet import ResNet

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
