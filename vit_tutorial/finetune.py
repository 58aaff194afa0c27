"""Fine-tuning torchvision's ImageNet-pretrained ViT-B/16 on CIFAR-10.

ViT-B/16 saw 224x224 ImageNet images cut into 16x16 patches: a 14x14 grid, 196 patches plus CLS,
768-dim tokens, 12 blocks of 12 heads, 86M parameters. `FineTunedViT` upsamples the 32x32 CIFAR
batches that `vit_tutorial.data.batches` yields to 224x224 on the fly, re-standardises them with
ImageNet statistics, and classifies them with a new 10-class head, so the trainer in
`vit_tutorial.train` fine-tunes it unchanged (with `TrainConfig(optimizer="adamw", ...)`).

The ImageNet weights (330 MB) come through torchvision: downloaded once into torch's hub cache on a
connected machine. Without them, `load_imagenet_weights` stops with a one-line error; a model with
random weights still runs every code path, which is what the quick mode and the tests use.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .config import FineTuneConfig, TrainConfig
from .data import denormalise
from .errors import UNREADABLE_FILE_ERRORS, WeightsUnavailableError, first_line

WEIGHTS = torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1
IMAGE_SIZE = 224  # the resolution the ImageNet weights (and their position embeddings) were trained at
PATCH_SIZE = 16
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FINETUNE_RECIPE = TrainConfig(
    epochs=3,
    batch_size=128,
    lr=1e-4,
    optimizer="adamw",
    weight_decay=0.05,
    warmup_epochs=1,
    label_smoothing=0.1,
    grad_clip=1.0,
    patience=2,
)


class FineTunedViT(nn.Module):
    """ViT-B/16 for CIFAR-10: (B, 3, 32, 32) CIFAR-normalised images -> logits (B, num_classes).

    Built with random weights; `load_imagenet_weights` fills in the pretrained backbone.
    """

    def __init__(self, config: FineTuneConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FineTuneConfig()
        self.backbone = torchvision.models.vit_b_16(weights=None)
        self.backbone.heads.head = _new_head(self.backbone.hidden_dim, config.num_classes)
        set_trainable_blocks(self.backbone, config.trainable_blocks)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """CIFAR-normalised (B, 3, 32, 32) -> ImageNet-normalised (B, 3, 224, 224)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FineTunedViT expects images shaped (B, 3, H, W), got {tuple(images.shape)}")
        pixels = denormalise(images)  # [0, 1]
        pixels = F.interpolate(pixels, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        """Logits (B, num_classes); with `return_attention`, also the attention weights (B, 12, 12, 197, 197)
        of torchvision's own forward pass, recorded by hooks (see `recording_attention`)."""
        if not return_attention:
            return self.backbone(self.prepare(images))
        with recording_attention(self) as records:
            logits = self.backbone(self.prepare(images))
        return logits, torch.stack(records, dim=1)  # (b, depth, h, n, n)


def _new_head(width: int, num_classes: int) -> nn.Linear:
    head = nn.Linear(width, num_classes)
    nn.init.zeros_(head.weight)  # start from uniform predictions, as the ViT paper does when fine-tuning
    nn.init.zeros_(head.bias)
    return head


def set_trainable_blocks(backbone: torchvision.models.VisionTransformer, blocks: int) -> None:
    """Freeze everything except the last `blocks` encoder blocks, the final norm and the head.

    With all 12 blocks, everything trains."""
    layers = list(backbone.encoder.layers)
    for param in backbone.parameters():
        param.requires_grad = blocks >= len(layers)
    for module in [*layers[len(layers) - blocks :], backbone.encoder.ln, backbone.heads]:
        for param in module.parameters():
            param.requires_grad = True


def weights_file() -> Path:
    """Where torchvision keeps the downloaded ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(WEIGHTS.url).name


def load_imagenet_weights(model: FineTunedViT, *, download: bool = True, progress: bool = True) -> FineTunedViT:
    """Copy the ImageNet-pretrained ViT-B/16 into `model`'s backbone (all but the new head).

    Raises:
        WeightsUnavailableError: the weights are not cached and cannot be downloaded, or the cached file is damaged.
    """
    where = weights_file()
    if not where.is_file():
        if not download:
            raise WeightsUnavailableError(
                f"ImageNet weights for ViT-B/16 are not at {where}; allow the download or copy {where.name} there"
            )
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            # Written to a temporary file and checked against the hash in its name before it is moved into
            # place, so an interrupted or corrupted download leaves nothing behind.
            torch.hub.download_url_to_file(
                WEIGHTS.url, str(where), hash_prefix=where.stem.split("-")[-1], progress=progress
            )
        except (OSError, RuntimeError, ValueError) as error:  # URLError is an OSError; a bad hash a RuntimeError
            raise WeightsUnavailableError(
                f"could not get ImageNet weights for ViT-B/16 from {WEIGHTS.url} ({first_line(error, 120)}); "
                f"run on a connected machine, or copy {where.name} to {where.parent}"
            ) from None
        print(f"downloaded {where.name} (330 MB, once) into torch's hub cache", file=sys.stderr, flush=True)
    try:
        state = torch.load(where, map_location="cpu", weights_only=True)
    except UNREADABLE_FILE_ERRORS as error:
        raise WeightsUnavailableError(
            f"{where} is damaged ({first_line(error, 120)}); delete it and run again to download it afresh"
        ) from None
    damaged = f"{where} is not torchvision's ViT-B/16 weights"
    advice = "delete it and run again to download it afresh"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{damaged} (found a {type(state).__name__}, not weights by name); {advice}")
    state = {key: value for key, value in state.items() if not str(key).startswith("heads.")}
    expected = model.backbone.state_dict()
    wrong = [k for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise WeightsUnavailableError(
            f"{damaged} ({wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(expected[wrong[0]].shape)}); "
            f"{advice}"
        )
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith("heads.") for key in missing):
        raise WeightsUnavailableError(
            f"{where.name} does not fit torchvision's vit_b_16 (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model


@contextmanager
def recording_attention(model: FineTunedViT) -> Iterator[list[torch.Tensor]]:
    """Collect every block's attention weights (B, heads, n, n) during the model's own forward pass.

    torchvision calls its attention with `need_weights=False`; a pre-hook asks for the per-head
    weights instead and a hook stores them, so no second forward loop is needed.
    """
    records: list[torch.Tensor] = []

    def ask_for_weights(module, args, kwargs):
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    def store(module, args, output):
        records.append(output[1].detach())

    handles = []
    for layer in model.backbone.encoder.layers:
        handles.append(layer.self_attention.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
        handles.append(layer.self_attention.register_forward_hook(store))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()
