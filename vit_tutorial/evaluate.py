"""Test-set metrics: accuracy, per-class precision / recall / F1, the confusion matrix; and a model's cost.

With `tta=True`, the logits are the mean over test-time views of each image (`tta_views`): as it is and
mirrored, each also shifted by 4 pixels down-right and up-left (reflected at the border, as the training
crop pads), six views in all. Airbench (Jordan 2024) averages such views; the book's headline numbers stay
the single view.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import CLASSES, Split, batches
from .devices import describe_hardware, select_device
from .files import write_json
from .registry import spec_for

TTA_SHIFT = 4  # pixels, as far as the training crop shifts


def tta_views(images: torch.Tensor) -> list[torch.Tensor]:
    """The test-time views of a batch (B, C, H, W): itself and mirrored, each unshifted and shifted by `TTA_SHIFT`
    pixels down-right and up-left with the border reflected."""
    s = TTA_SHIFT
    padded = F.pad(images, (s, s, s, s), mode="reflect")  # (b, c, H + 2s, W + 2s)
    h, w = images.shape[-2:]
    shifted = [images, padded[..., :h, :w], padded[..., 2 * s :, 2 * s :]]
    return shifted + [view.flip(-1) for view in shifted]


@torch.no_grad()
def predict_logits(
    model: nn.Module, split: Split, device: str | torch.device = "cpu", batch_size: int = 1000, tta: bool = False
) -> torch.Tensor:
    """Logits (N, num_classes) of `model` for every image of `split`, in order, on the CPU; with `tta`, the mean of
    the logits of the image's `tta_views`."""
    model.eval()
    outputs = []
    for images, _ in batches(split, batch_size, device=device):
        views = tta_views(images) if tta else [images]
        outputs.append(torch.stack([model(view).float() for view in views]).mean(0).cpu())
    return torch.cat(outputs) if outputs else torch.empty(0, len(CLASSES))


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_report(
    labels: torch.Tensor, predictions: torch.Tensor, class_names: tuple[str, ...] = CLASSES
) -> dict[str, Any]:
    """Accuracy, per-class precision / recall / F1 / support, their macro average, and the confusion matrix."""
    matrix = confusion_matrix(labels, predictions, len(class_names)).double()
    true_positives = matrix.diag()
    predicted = matrix.sum(dim=0)
    support = matrix.sum(dim=1)
    precision = torch.where(predicted > 0, true_positives / predicted.clamp(min=1), torch.zeros_like(predicted))
    recall = torch.where(support > 0, true_positives / support.clamp(min=1), torch.zeros_like(support))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    per_class = {
        name: {
            "precision": precision[i].item(),
            "recall": recall[i].item(),
            "f1": f1[i].item(),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "accuracy": (true_positives.sum() / matrix.sum().clamp(min=1)).item(),
        "num_images": int(matrix.sum()),
        "per_class": per_class,
        "macro_avg": {"precision": precision.mean().item(), "recall": recall.mean().item(), "f1": f1.mean().item()},
        "class_names": list(class_names),
        "confusion_matrix": matrix.long().tolist(),
    }


def evaluate(
    model: nn.Module, split: Split, *, device: str | torch.device = "cpu", batch_size: int = 1000, tta: bool = False
) -> dict[str, Any]:
    """Full metrics of `model` on `split` (with `tta`, of the mean over `tta_views`), plus the mean cross-entropy,
    as a JSON-ready dict."""
    logits = predict_logits(model, split, device, batch_size, tta)
    labels = split.labels.cpu()
    report = classification_report(labels, logits.argmax(dim=1))
    report["loss"] = F.cross_entropy(logits, labels).item() if len(labels) else float("nan")
    report["tta"] = tta
    return report


def test_metrics(
    model: nn.Module,
    test: Split,
    record=None,
    *,
    device: str | torch.device | None = None,
    provenance: dict[str, Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_sha256: str = "",
    tta: bool = False,
) -> dict[str, Any]:
    """What `metrics.json` holds, the same for `train` and `evaluate`: the full metrics of `model` on the test
    split (with `tta`, of its test-time views), the data's provenance, the hardware that measured them, and,
    given the run's `record.RunRecord`, its best epoch and the checkpoint they score (its name, and its content
    hash, which says whose metrics a file holds whatever it is called)."""
    device = select_device(device)
    metrics = evaluate(model, test, device=device, tta=tta)
    metrics["provenance"] = provenance if provenance is not None else (record.provenance if record else {})
    metrics["hardware"] = describe_hardware(device)
    if record is not None:
        metrics["best_epoch"] = record.best_epoch
    if checkpoint is not None:
        metrics["checkpoint"] = Path(checkpoint).name
    if checkpoint_sha256:
        metrics["checkpoint_sha256"] = checkpoint_sha256
    return metrics


def save_metrics(metrics: dict[str, Any], path: str | os.PathLike) -> Path:
    return write_json(path, metrics)


def count_flops(model: nn.Module, image_shape: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Floating-point operations of one forward pass on one image, as torch's FlopCounterMode counts them
    (a multiply-add is 2 FLOPs; softmax, norms and activations are not counted).

    Transformers run their explicit attention path here: the counter cannot see inside fused attention
    kernels (SDPA on the CPU, torch's native multi-head attention) and would miss their products.
    The input asks for gradients because that is what keeps `nn.MultiheadAttention` off its fused path.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    images = torch.zeros(1, *image_shape, device=next(model.parameters()).device, requires_grad=True)
    config = getattr(model, "config", None)  # a model of the registry, or any other module
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        if config is not None and spec_for(config).attention:
            model(images, return_attention=True)
        else:
            model(images)
    return counter.get_total_flops()


@torch.no_grad()
def inference_throughput(model: nn.Module, images: torch.Tensor, *, batch_size: int = 250, repeats: int = 2) -> float:
    """Images per second of `model` in eval mode on `images` (normalised, on the model's device); best of `repeats`."""
    model.eval()
    model(images[:batch_size])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size])
        if images.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return len(images) / best


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, split: Split, device: torch.device, batch_size: int = 1000):
    """Mean cross-entropy and accuracy of `model` on `split` (no augmentation, no smoothing), in the number
    format of the caller's `devices.autocast`, if any: validation, and `diagnostics`' clean training accuracy."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for images, labels in batches(split, batch_size, device=device):
        logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
    return loss_sum.item() / len(split), correct.item() / len(split)
