"""Knowledge distillation through the CLS head: a trained teacher's predictions as a second target.

DeiT (Touvron et al., 2021) trains a ViT on ImageNet alone by also matching a CNN teacher, which brings
the convolution's assumptions about images in through the labels. The card's model has one head, on
the CLS token, so both targets go to it: the loss is

    (1 - w) * CE(student, labels) + w * CE(student, teacher's top class)                  ("hard")
    (1 - w) * CE(student, labels) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))  ("soft")

with w = `TrainConfig.distill_weight` and T = `distill_temperature`. The teacher sees exactly the batch
the student sees (augmented, erased and mixed), in eval mode and without gradients.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig


def load_teacher(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """The model stored at `path`, frozen in eval mode on `device`.

    Raises:
        CheckpointError: one line, when the file is missing, damaged or holds no CIFAR-10 model.
    """
    from .checkpoint import load_model

    return load_model(path, device).requires_grad_(False)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, supervised: torch.Tensor, config: TrainConfig
) -> torch.Tensor:
    """Mix the supervised loss (already computed on the labels) with the teacher's term.

    Args:
        student, teacher: logits (B, classes).
        supervised: the scalar cross-entropy of the student on the labels.
    """
    student, teacher = student.float(), teacher.float()
    if config.distillation == "hard":
        taught = F.cross_entropy(student, teacher.argmax(dim=1))
    else:
        t = config.distill_temperature
        taught = F.kl_div(
            F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean", log_target=True
        ) * (t * t)
    w = config.distill_weight
    return (1 - w) * supervised + w * taught
