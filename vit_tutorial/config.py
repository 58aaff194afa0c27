"""Typed configuration for the model and for training.

Every field carries its help text (`option(default, "help")`), which the command line shows, so the
configs, the CLI and the documentation cannot drift apart. All configs are frozen dataclasses validated
on construction, so a bad value fails where it is set, not deep inside a forward pass. `to_dict` /
`from_dict` round-trip them through checkpoints and JSON.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass
from typing import Any, Literal

Augmentation = Literal["none", "flip-crop", "flip-crop-cutout", "trivialaugment", "randaugment"]
Schedule = Literal["cosine", "constant"]
Optimizer = Literal["sgd", "adamw"]
DecayScope = Literal["matrices", "blocks", "blocks+head"]
Distillation = Literal["none", "hard", "soft"]

AUGMENTATIONS: tuple[str, ...] = typing.get_args(Augmentation)
MAX_SEED = 2**32 - 1  # a seed is mixed with the epoch number and must stay within a 64-bit generator seed
# What the package builds at most: a model of 10^9 parameters takes 4 GB, and training keeps about five copies
# (weights, gradients, momentum, moving average, best weights); the other limits are far beyond any use.
MAX_PARAMETERS = 10**9
LIMITS = {"image_size": 1024, "depth": 256, "heads": 256, "randaugment_n": 16, "batch_size": 2**16, "epochs": 10**5}


def option(default: Any, help: str) -> Any:
    """A dataclass field with its help text, which `vit_tutorial.cli` turns into a command-line option."""
    return dataclasses.field(default=default, metadata={"help": help})


def help_of(field: dataclasses.Field) -> str:
    return field.metadata.get("help", "")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class _Serialisable:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """The config `values` describe; fields they lack take today's defaults (older checkpoints)."""
        if not isinstance(values, dict):
            raise TypeError(f"{cls.__name__} is read from a dict of its fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        _require(not unknown, f"{cls.__name__} has no field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def _check_types(self) -> None:
        """Every field holds its declared type (an int where a float is declared is fine; a bool is not a
        number), and every float is finite."""
        name = type(self).__name__
        for field, kind in typing.get_type_hints(type(self)).items():
            value = getattr(self, field)
            if typing.get_origin(kind) is Literal:
                choices = typing.get_args(kind)
                _require(value in choices, f"{name}.{field} must be one of {choices}, got {value!r}")
            elif kind in (bool, int, float, str):
                allowed = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[kind]
                ok = isinstance(value, allowed) and (kind is bool or not isinstance(value, bool))
                _require(ok, f"{name}.{field} must be {kind.__name__}, got {type(value).__name__} {value!r}")
                if kind is float:
                    _require(math.isfinite(value), f"{name}.{field} must be a finite number, got {value!r}")

    def _require_at_most(self, *names: str) -> None:
        for name in names:
            value, limit = getattr(self, name), LIMITS[name]
            _require(value <= limit, f"{type(self).__name__}.{name} is at most {limit:,}, got {value:,}")

    def _require_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            _require(value > 0, f"{type(self).__name__}.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ViTConfig(_Serialisable):
    image_size: int = option(32, "side of the square input image, in pixels")
    patch_size: int = option(8, "side of a square patch; must divide image_size")
    in_channels: int = option(3, "colour channels (RGB)")
    num_classes: int = option(10, "classes (CIFAR-10)")
    dim: int = option(128, "width of every token embedding")
    depth: int = option(12, "number of encoder blocks")
    heads: int = option(4, "attention heads per block; must divide dim")
    mlp_dim: int = option(512, "hidden width of each block's MLP")
    dropout: float = option(0.0, "dropout on embeddings, attention weights and MLP outputs")
    drop_path: float = option(0.0, "stochastic depth: largest rate, reached by the last block")

    def __post_init__(self) -> None:
        self._check_types()
        self._require_positive("image_size", "patch_size", "in_channels", "num_classes", "dim", "depth", "heads")
        self._require_positive("mlp_dim")
        _require(
            self.image_size % self.patch_size == 0,
            f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}; "
            f"choose a patch size that divides it (for 32: 1, 2, 4, 8, 16 or 32)",
        )
        _require(
            self.dim % self.heads == 0,
            f"dim {self.dim} is not divisible by heads {self.heads}; each head gets dim // heads features",
        )
        for name in ("dropout", "drop_path"):
            value = getattr(self, name)
            _require(0.0 <= value < 1.0, f"ViTConfig.{name} must be in [0, 1), got {value!r}")
        self._require_at_most("image_size", "depth", "heads")
        parameters = self.depth * (4 * self.dim**2 + 2 * self.dim * self.mlp_dim) + self.patch_dim * self.dim
        _require(
            parameters <= MAX_PARAMETERS,
            f"a ViT of dim {self.dim}, depth {self.depth} and mlp_dim {self.mlp_dim} would have about "
            f"{parameters:.2g} parameters, more than the {MAX_PARAMETERS:.0e} this package builds; choose a smaller "
            "dim, depth or mlp_dim",
        )

    @property
    def grid_size(self) -> int:
        """Patches along one side of the image (4 for 32x32 images and 8x8 patches)."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_tokens(self) -> int:
        """Sequence length seen by the encoder: the patches plus the CLS token."""
        return self.num_patches + 1

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch: patch_size * patch_size * in_channels."""
        return self.patch_size**2 * self.in_channels

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


@dataclass(frozen=True)
class ResNetConfig(_Serialisable):
    """The CNN baseline: torchvision's ResNet-18 with a CIFAR stem (3x3 convolution, no max-pool)."""

    image_size: int = option(32, "side of the square input image, in pixels")
    in_channels: int = option(3, "colour channels (RGB)")
    num_classes: int = option(10, "classes (CIFAR-10)")

    def __post_init__(self) -> None:
        self._check_types()
        self._require_positive("image_size", "in_channels", "num_classes")
        self._require_at_most("image_size")


@dataclass(frozen=True)
class FineTuneConfig(_Serialisable):
    """torchvision's ViT-B/16 with a new CIFAR-10 head, fed CIFAR images upsampled to 224x224."""

    num_classes: int = option(10, "classes (CIFAR-10); the new head replaces ImageNet's 1000")
    trainable_blocks: int = option(
        12, "train the last N of the 12 encoder blocks, the final norm and the head; 12 trains everything"
    )

    @property
    def image_size(self) -> int:
        """The side of the CIFAR images the model is fed; it upsamples them to 224 itself."""
        return 32

    def __post_init__(self) -> None:
        self._check_types()
        self._require_positive("num_classes")
        _require(
            0 <= self.trainable_blocks <= 12,
            f"trainable_blocks must be an integer in [0, 12] (0 trains the head only), got {self.trainable_blocks!r}",
        )


@dataclass(frozen=True)
class TrainConfig(_Serialisable):
    epochs: int = option(100, "upper bound; early stopping usually ends sooner")
    batch_size: int = option(256, "images per optimiser step")
    lr: float = option(0.05, "peak learning rate, reached after warmup")
    momentum: float = option(0.9, "SGD momentum")
    nesterov: bool = option(True, "Nesterov momentum (SGD)")
    weight_decay: float = option(5e-4, "applied to weight matrices only, not to biases, norms or embeddings")
    qk_decay: float = option(
        1.0, "multiplier of weight_decay for the attention's query and key weights; 0 spares them (chapter 6)"
    )
    decay_scope: DecayScope = option(
        "matrices",
        "which weights decay: every weight matrix (matrices; the query/key rows by qk_decay), or only the encoder "
        "blocks' MLP, attention output and value weights (blocks; no decay on query/key, embeddings or head), "
        "or those and the head (blocks+head)",
    )
    warmup_epochs: int = option(5, "linear warmup from 0 to lr")
    schedule: Schedule = option("cosine", "after warmup: cosine decay to 0 over the remaining epochs, or constant")
    cooldown_epochs: int = option(
        0,
        "constant schedule: the last N epochs decay the rate to 0 (warmup-stable-decay, 1 - sqrt shape); "
        "with branch_from, the cooldown of a constant-rate run",
    )
    branch_from: str = option(
        "",
        "a checkpoint of a constant-rate run (its last.pt or a snapshot): continue it, weights, momentum, EMA "
        "and history, as a cooldown of cooldown_epochs epochs in a run folder of its own",
    )
    label_smoothing: float = option(0.1, "share of the target spread evenly over all classes")
    grad_clip: float = option(1.0, "max global gradient norm; 0 turns clipping off")
    patience: int = option(10, "early stopping: epochs without a better validation accuracy before stopping")
    val_size: int = option(5000, "images held out of the 50,000 training images for validation")
    seed: int = option(0, "seeds the split, the initial weights, shuffling and augmentation")
    augment: Augmentation = option("flip-crop", "train-time augmentation, see vit_tutorial.augment")
    randaugment_n: int = option(2, "randaugment: operations applied to each image in a row")
    randaugment_m: int = option(9, "randaugment: magnitude level of every operation, 0..30")
    random_erasing: float = option(0.0, "probability of erasing a random rectangle of each image; 0 turns it off")
    mixup: float = option(0.0, "mixup Beta(alpha, alpha) parameter; 0 turns it off")
    cutmix: float = option(0.0, "cutmix Beta(alpha, alpha) parameter; 0 turns it off (with mixup: half the batches)")
    ema: float = option(0.0, "decay of a moving average of the weights, used to validate and save; 0 turns it off")
    optimizer: Optimizer = option("sgd", "sgd (momentum, nesterov) or adamw")
    distillation: Distillation = option(
        "none", "learn from a teacher's predictions too: hard (its top class) or soft (its probabilities)"
    )
    teacher: str = option("", "checkpoint of the teacher for distillation, e.g. runs/resnet/best.pt")
    distill_weight: float = option(0.5, "share of the loss that comes from the teacher, in [0, 1]")
    distill_temperature: float = option(1.0, "soft distillation: temperature of both softmaxes")
    init_from: str = option(
        "", "start from this checkpoint's weights instead of random ones (same model and validation split)"
    )
    revive: float = option(
        0.0,
        "with init_from: fresh query/key weights, this many times the size of an initialisation's, for the layers "
        "whose query/key weights collapsed (0 keeps them; 1 gives almost uniform attention, 4 about the live "
        "layers' unevenness; chapter 6)",
    )

    def __post_init__(self) -> None:
        self._check_types()
        self._require_positive("epochs", "batch_size")
        self._require_at_most("epochs", "batch_size", "randaugment_n")
        for name in ("warmup_epochs", "cooldown_epochs", "patience", "val_size", "seed", "randaugment_n"):
            value = getattr(self, name)
            _require(value >= 0, f"TrainConfig.{name} must be an integer >= 0, got {value!r}")
        for name in ("lr", "weight_decay", "qk_decay", "grad_clip", "mixup", "cutmix", "revive"):
            value = getattr(self, name)
            _require(value >= 0, f"TrainConfig.{name} must be >= 0, got {value!r}")
        _require(self.seed <= MAX_SEED, f"TrainConfig.seed must be at most {MAX_SEED} (2**32 - 1), got {self.seed}")
        _require(0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1) (0.9 is typical), got {self.momentum!r}")
        _require(0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        _require(
            0.0 <= self.random_erasing <= 1.0, f"random_erasing is a probability in [0, 1], got {self.random_erasing!r}"
        )
        _require(
            0.0 <= self.ema < 1.0, f"ema is a decay in [0, 1) (0.999 is typical, 0 turns it off), got {self.ema!r}"
        )
        _require(
            0 <= self.randaugment_m <= 30,
            f"randaugment_m is a magnitude level from 0 to 30, got {self.randaugment_m!r}",
        )
        _require(
            self.optimizer != "sgd" or not self.nesterov or self.momentum > 0,
            "nesterov needs momentum > 0; set momentum or turn nesterov off",
        )
        _require(0.0 <= self.distill_weight <= 1.0, f"distill_weight is a share in [0, 1], got {self.distill_weight!r}")
        _require(self.distill_temperature > 0, f"distill_temperature must be > 0, got {self.distill_temperature!r}")
        _require(
            (self.distillation == "none") == (self.teacher == ""),
            "distillation and teacher go together: give both (e.g. --distillation hard --teacher runs/resnet/best.pt) "
            f"or neither; got distillation {self.distillation!r} and teacher {self.teacher!r}",
        )
        _require(not self.revive or bool(self.init_from), "revive needs init_from, the checkpoint to revive")
        _require(
            not self.cooldown_epochs or self.schedule == "constant",
            f"cooldown_epochs decays a constant rate; use schedule 'constant' (got {self.schedule!r})",
        )
        _require(
            not self.cooldown_epochs or self.warmup_epochs + self.cooldown_epochs <= self.epochs,
            f"warmup_epochs ({self.warmup_epochs}) and cooldown_epochs ({self.cooldown_epochs}) do not fit in "
            f"epochs ({self.epochs}); raise epochs or shorten them",
        )
        _require(
            not self.branch_from or self.cooldown_epochs > 0,
            "branch_from starts a cooldown: give cooldown_epochs too (e.g. --cooldown-epochs 15)",
        )
        _require(
            not (self.branch_from and self.init_from),
            "branch_from and init_from both say where a run starts; give one of them",
        )


@dataclass(frozen=True)
class RunOptions(_Serialisable):
    """How a run trains, as opposed to what it learns (`TrainConfig`): where, in which number format, and what
    happens to its folder. None of it changes the result beyond rounding. The command line's training options
    make one; `train.fit`, the stacked trainer and the sweep take it."""

    device: str = option("auto", "cuda, mps, cpu or auto")
    precision: Literal["auto", "bf16", "fp32"] = option(
        "auto", "bf16 autocast or fp32; auto: bf16 where the device multiplies it natively"
    )
    threads: int = option(0, "CPU threads for PyTorch (0: PyTorch's choice); 1 for a run that shares the machine")
    compile: bool = option(False, "train through torch.compile and one CUDA graph per step on CUDA (eager elsewhere)")
    progress: bool = option(True, "progress bars")
    log: bool = option(True, "a line per finished epoch")
    resume: bool = option(False, "continue the run in the folder from its last.pt")
    overwrite: bool = option(False, "replace a run already in the folder instead of refusing")
    snapshot_every: int = option(0, "also keep every Nth epoch's last.pt as snapshots/epoch_NNNN.pt (0: none)")

    def __post_init__(self) -> None:
        self._check_types()
        cores = (os.cpu_count() or 1) * 4
        _require(
            0 <= self.threads <= cores,
            f"threads is a number of CPU threads from 1 to {cores} (0: PyTorch's choice), got {self.threads}",
        )
        _require(self.snapshot_every >= 0, f"snapshot_every is a number of epochs >= 0, got {self.snapshot_every}")
        _require(not (self.resume and self.overwrite), "resume and overwrite exclude each other; give one of them")


def env_flag(name: str) -> bool:
    """True when the environment variable `name` is 1, true or yes (any case); unset, 0 or anything else is False."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def quick_mode() -> bool:
    """True when `VIT_TUTORIAL_QUICK` is set to 1: notebooks then use a small subset and few steps."""
    return env_flag("VIT_TUTORIAL_QUICK")


def building_book() -> bool:
    """True when `VIT_TUTORIAL_BOOK` is 1: `python3 dev.py execute` sets it while it stores the outputs the book
    shows, so that a chapter can point at files the book build writes (the explorer's weights) instead of
    carrying them in the notebook."""
    return env_flag("VIT_TUTORIAL_BOOK")
