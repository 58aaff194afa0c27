"""Which models exist: the one table that checkpoints, the trainer, the command line, the evaluation,
the sweep and the benchmark read.

Each entry names its config class and the module its model lives in. The module is imported only when
a model is built, so loading the small ViT never imports the ViT-B/16 code. Every model keeps the same
contract: built from its config, `model(images)` maps CIFAR-normalised (B, 3, 32, 32) batches to logits,
and `model(images, return_attention=True)` returns `(logits, attentions)` where the model has attention
(B, depth, heads, tokens, tokens), or refuses with a ValueError where it has none.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import FineTuneConfig, ResNetConfig, ViTConfig


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what checkpoints record and `--model` takes
    config_class: Any  # a config dataclass of vit_tutorial.config (it has from_dict)
    module: str
    class_name: str
    description: str
    from_scratch: bool  # `train --model NAME` builds and trains it from random weights
    attention: bool  # `model(images, return_attention=True)` returns the attention weights

    def model_class(self) -> type[nn.Module]:
        return getattr(importlib.import_module(self.module), self.class_name)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("vit", ViTConfig, "vit_tutorial.model", "ViT", "the book's Vision Transformer", True, True),
        ModelSpec(
            "resnet",
            ResNetConfig,
            "vit_tutorial.resnet",
            "ResNet",
            "ResNet-18 with a CIFAR stem (chapter 10)",
            True,
            False,
        ),
        ModelSpec(
            "vit_b_16",
            FineTuneConfig,
            "vit_tutorial.finetune",
            "FineTunedViT",
            "ImageNet ViT-B/16, fine-tuned (chapter 11)",
            False,
            True,
        ),
    )
}
FROM_SCRATCH: tuple[str, ...] = tuple(name for name, spec in MODELS.items() if spec.from_scratch)


def spec_named(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"no model named {name!r}; the models are {', '.join(MODELS)}")
    return MODELS[name]


def spec_for(config: Any) -> ModelSpec:
    """The entry whose config class `config` is an instance of."""
    for spec in MODELS.values():
        if isinstance(config, spec.config_class):
            return spec
    raise TypeError(
        f"no model is built from a {type(config).__name__}; "
        f"expected one of {[s.config_class.__name__ for s in MODELS.values()]}"
    )


def config_of(model: nn.Module) -> Any:
    """The config a model of the registry was built from (every one keeps it as `model.config`)."""
    return getattr(model, "config")  # noqa: B009 (typed Any: nn.Module types unknown attributes as submodules)


def architecture_of(model: nn.Module) -> str:
    """The registry name of a built model, read from its config."""
    return spec_for(config_of(model)).name


def build_model(config: Any, seed: int = 0) -> nn.Module:
    """A freshly initialised model of the kind `config` describes; the same seed gives the same weights."""
    model_class = spec_for(config).model_class()
    torch.manual_seed(seed)
    return model_class(config)
