"""The CNN baseline: torchvision's ResNet-18, adapted to 32x32 images.

ImageNet's ResNet shrinks a 224x224 image 4x before the first residual block (a 7x7 stride-2
convolution, then a max-pool). On 32x32 CIFAR images that would leave 8x8 feature maps after the
stem, so the usual CIFAR variant swaps in a 3x3 stride-1 convolution and drops the max-pool: the four
stages then see 32, 16, 8 and 4 pixels a side.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .config import ResNetConfig


class ResNet(nn.Module):
    """ResNet-18 with a CIFAR stem; `model(images)` maps (B, 3, 32, 32) to logits (B, num_classes)."""

    def __init__(self, config: ResNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ResNetConfig()
        net = torchvision.models.resnet18(num_classes=config.num_classes)
        net.conv1 = nn.Conv2d(config.in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.net = net

    def forward(self, images: torch.Tensor, return_attention: bool = False) -> torch.Tensor:
        if return_attention:
            raise ValueError("ResNet-18 has no attention to return; it is a convolutional network")
        c, size = self.config.in_channels, self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, size, size):
            raise ValueError(f"ResNet expects images shaped (B, {c}, {size}, {size}), got {tuple(images.shape)}")
        return self.net(images)
