"""Vision Transformers from scratch on CIFAR-10: the package the tutorial book builds."""

from .config import ResNetConfig, TrainConfig, ViTConfig, quick_mode
from .errors import CheckpointError, DataNotFoundError, ImageError, TrainingDivergedError, VitTutorialError
from .model import ViT, count_parameters
from .resnet import ResNet
from .pretrained import load_pretrained, pretrained_available

__version__ = "0.2.0"

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
    "count_parameters",
    "load_pretrained",
    "pretrained_available",
    "quick_mode",
]
