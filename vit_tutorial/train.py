"""A small trainer that knows nothing of the model: SGD, warmup + cosine, early stopping.

`fit` trains on `data.train`, selects on `data.val` (never on the test set), keeps the best weights,
and, given an output folder, writes `last.pt` after every epoch (resumable, at most one epoch lost)
and `best.pt` at the end.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .augment import mix_batch
from .checkpoint import load_checkpoint, save_checkpoint
from .config import ResNetConfig, TrainConfig, ViTConfig
from .data import CIFAR10, CLASSES, Split, batches
from .errors import CheckpointError, TrainingDivergedError, first_line
from .model import ViT
from .resnet import ResNet

LAST = "last.pt"
BEST = "best.pt"


def select_device(preferred: str | torch.device | None = None) -> torch.device:
    """`preferred` if given (and not 'auto'), else CUDA, then MPS, then CPU."""
    if preferred not in (None, "auto"):
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {preferred!r} was asked for but CUDA is not available; use --device cpu or auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores ({device.type})"


def build_model(config: ViTConfig | ResNetConfig, seed: int = 0) -> ViT | ResNet:
    """A freshly initialised ViT (or, given a ResNetConfig, the CNN baseline); the same seed gives the same weights."""
    torch.manual_seed(seed)
    return ResNet(config) if isinstance(config, ResNetConfig) else ViT(config)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimiser step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def compile_for(model: nn.Module, device: torch.device) -> nn.Module:
    """`torch.compile` with CUDA graphs on CUDA; elsewhere the eager model, with a note why.

    The returned module shares its parameters with `model`, so optimiser and checkpoints keep using `model`.
    """
    if device.type != "cuda":
        warnings.warn(f"compile is used on CUDA only; training eagerly on {device.type}", stacklevel=2)
        return model
    return torch.compile(model, mode="max-autotune-no-cudagraphs" if _has_dynamic_parts(model) else "reduce-overhead")


def _has_dynamic_parts(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "drop_path", 0) > 0 or getattr(config, "dropout", 0) > 0


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (or AdamW) with weight decay on weight matrices only (not biases, norms, CLS token or position embeddings).

    Frozen parameters (requires_grad False) are left out, so fine-tuning only the last blocks works.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            is_matrix = param.ndim >= 2 and not name.endswith(("cls_token", "pos_embed"))
            (decay if is_matrix else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


@dataclass
class FitResult:
    """What `fit` returns: the model with its best weights, and how it got there."""

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int  # 1-based epoch whose weights the model now holds
    stopped_early: bool
    checkpoint: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def validate(model: nn.Module, split: Split, device: torch.device, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on `split` (no augmentation, no smoothing)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for images, labels in batches(split, batch_size, device=device):
        with _autocast(device):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
    return loss_sum / len(split), correct / len(split)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def _train_epoch(model, split, optimizer, scheduler, config, device, generator, bar) -> tuple[float, float, int]:
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    drop_last = len(split) >= config.batch_size
    for images, labels in batches(
        split, config.batch_size, device=device, shuffle=True, augment=config.augment,
        generator=generator, drop_last=drop_last,
    ):  # fmt: skip
        targets = labels
        if config.mixup > 0 or config.cutmix > 0:
            images, targets = mix_batch(images, labels, len(CLASSES), mixup=config.mixup, cutmix=config.cutmix, generator=generator)
        with _autocast(device):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * labels.shape[0]
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += labels.shape[0]
        if bar is not None:
            bar.update(labels.shape[0])
    return loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1), seen


def fit(
    model: nn.Module,
    data: CIFAR10,
    config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log_epochs: bool = True,
    compile: bool = False,
) -> FitResult:
    """Train `model` on `data.train`, early-stop on `data.val`, and return it holding its best weights.

    `progress` shows tqdm bars; `log_epochs` prints one summary line per epoch.
    With `out_dir`, `last.pt` is rewritten after every epoch; `resume=True` continues from it.
    `compile=True` trains through `torch.compile` on CUDA and falls back to eager elsewhere.
    Shuffling, augmentation and dropout are seeded per epoch, so on the CPU a resumed run
    repeats the uninterrupted one exactly.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite; the last good checkpoint is kept.
        CheckpointError: `resume` was asked for but `last.pt` is missing, corrupt or from another setup.
    """
    from tqdm.auto import tqdm

    device = select_device(device)
    model.to(device)
    train = data.train.to(device) if device.type != "cpu" else data.train
    out_dir = Path(out_dir) if out_dir is not None else None
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=max(len(train) // config.batch_size, 1))
    model_config = getattr(model, "config", None)
    state = {"epoch": 0, "history": [], "best_val_accuracy": -1.0, "best_epoch": 0, "bad_epochs": 0,
             "best_model": copy.deepcopy(model.state_dict()), "wall_seconds": 0.0}  # fmt: skip
    if resume:
        state = _restore(out_dir, model, optimizer, scheduler, config, state)
    common = {
        "architecture": getattr(model, "architecture", None),
        "model_config": model_config.to_dict() if model_config is not None else None,
        "train_config": config.to_dict(),
        "provenance": data.provenance,
        "hardware": describe_hardware(device),
    }
    forward = compile_for(model, device) if compile else model
    stopped_early = False
    for epoch in range(state["epoch"], config.epochs):
        if 0 < config.patience <= state["bad_epochs"]:
            stopped_early = True
            break
        record = _epoch(forward, model, train, data.val, optimizer, scheduler, config, device, epoch, progress, out_dir)
        state["history"].append(record)
        state["wall_seconds"] += record["seconds"]
        if record["val_accuracy"] > state["best_val_accuracy"]:
            state.update(best_val_accuracy=record["val_accuracy"], best_epoch=epoch + 1, bad_epochs=0,
                         best_model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})  # fmt: skip
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if log_epochs:
            tqdm.write(
                f"epoch {epoch + 1:3d}  train loss {record['train_loss']:.3f} acc {record['train_accuracy']:.3f}  "
                f"val loss {record['val_loss']:.3f} acc {record['val_accuracy']:.3f}  {record['seconds']:.1f}s"
            )
        if out_dir is not None:
            save_checkpoint(out_dir / LAST, {
                **common, **state, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            })  # fmt: skip

    model.load_state_dict(state["best_model"])
    info = {**common, "best_val_accuracy": state["best_val_accuracy"], "wall_seconds": state["wall_seconds"],
            "epochs_run": state["epoch"], "stopped_early": stopped_early}  # fmt: skip
    best_path = None
    if out_dir is not None:
        best_path = save_checkpoint(out_dir / BEST, {
            **info, "model": state["best_model"], "history": state["history"], "best_epoch": state["best_epoch"],
        })  # fmt: skip
    return FitResult(model, state["history"], state["best_epoch"], stopped_early, best_path, info)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warmup then cosine (or constant), as `lr_factor` describes."""
    schedule = partial(
        lr_factor, warmup_steps=config.warmup_epochs * steps_per_epoch,
        total_steps=config.epochs * steps_per_epoch, schedule=config.schedule,
    )  # fmt: skip
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _epoch(forward, model, train, val, optimizer, scheduler, config, device, epoch, progress, out_dir) -> dict[str, float]:
    """One epoch: train (seeded by the epoch number), check the loss is finite, validate; the history record."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    generator = torch.Generator(device=train.labels.device).manual_seed(config.seed * 100_003 + epoch)
    torch.manual_seed(config.seed * 100_003 + epoch)  # dropout and stochastic depth
    lr = optimizer.param_groups[0]["lr"]
    bar = tqdm(total=len(train), desc=f"epoch {epoch + 1}/{config.epochs}", unit="img", leave=False) if progress else None
    try:
        train_loss, train_acc, seen = _train_epoch(forward, train, optimizer, scheduler, config, device, generator, bar)
    finally:
        if bar is not None:
            bar.close()
    if not math.isfinite(train_loss):
        kept = f"the last good checkpoint {out_dir / LAST} is kept" if out_dir else "no checkpoint was being written"
        raise TrainingDivergedError(
            f"training loss became {train_loss} in epoch {epoch + 1}; {kept}; lower --lr or set --grad-clip, then resume"
        )
    val_loss, val_acc = validate(model, val, device)
    seconds = time.perf_counter() - started
    return {
        "epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_accuracy": train_acc,
        "val_loss": val_loss, "val_accuracy": val_acc, "seconds": seconds, "images_per_second": seen / seconds,
    }  # fmt: skip


def _restore(out_dir, model, optimizer, scheduler, config, default_state) -> dict:
    if out_dir is None:
        raise ValueError("resume=True needs out_dir, the folder holding last.pt")
    path = out_dir / LAST
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: no {LAST} in {out_dir}; start without --resume")
    payload = load_checkpoint(path)
    if _stored_config(TrainConfig, payload.get("train_config")) != config:
        raise CheckpointError(
            f"{path} was written with another training configuration; resume with the same options or use a new --out"
        )
    model_config = getattr(model, "config", None)
    if model_config is not None and _stored_config(type(model_config), payload.get("model_config")) != model_config:
        raise CheckpointError(f"{path} holds another model configuration; resume with the same options or use a new --out")
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
    except (KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} cannot be resumed ({first_line(error, 160)}); use a new --out") from None
    return {key: payload.get(key, value) for key, value in default_state.items()}


def _stored_config(cls, values: dict | None):
    """The config a checkpoint recorded (fields it lacks take today's defaults), or None if unreadable."""
    try:
        return cls.from_dict(values or {})
    except (ValueError, TypeError):
        return None
