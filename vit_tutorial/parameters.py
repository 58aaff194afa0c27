"""Where the weights of the book's models sit, for the trainer and the diagnostics: the query, key and value rows
of a fused attention projection, and which weights decay under each `TrainConfig.decay_scope`."""

from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig
from .model import Attention
from .optim import Decay, default_decay


def query_key_weights(model: nn.Module) -> list[tuple[torch.Tensor, int]]:
    """Each attention layer's fused input projection and its width d: rows [0, d) of the weight make the
    queries, [d, 2d) the keys, [2d, 3d) the values. The book's `model.Attention` and torch's
    `nn.MultiheadAttention` (torchvision's ViT-B/16) are both laid out so; a model without attention has none."""
    found = []
    for module in model.modules():
        if isinstance(module, Attention):
            found.append((module.qkv.weight, module.qkv.out_features // 3))
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            found.append((module.in_proj_weight, module.embed_dim))
    return found


def decays(name: str, param: torch.Tensor, scope: str) -> bool:
    """Whether weight decay applies to the parameter `name` under `TrainConfig.decay_scope`: "matrices" is every
    weight matrix and convolution kernel (not the CLS token or the position embeddings); "blocks" only the
    weight matrices inside the encoder blocks (the MLP's, the attention output's and the fused query/key/value
    matrix, whose query and key rows `decay_for` then spares); "blocks+head" those and the classifier's."""
    if param.ndim < 2 or not name.endswith("weight"):  # biases, norms, the CLS token and positions never decay
        return False
    return scope == "matrices" or name.startswith("blocks.") or (scope == "blocks+head" and name == "head.weight")


def decay_for(model: nn.Module, config: TrainConfig) -> Decay:
    """The weight decay of the book's models under `config`: the weights `decays` names; where the query and key
    rows of a fused attention projection decay differently from its value rows (`qk_decay` other than 1, or a
    `decay_scope` other than "matrices", which spares them), that matrix row by row: query and key rows at
    `qk_decay * weight_decay` (0 outside "matrices"), value rows at `weight_decay`.

    Raises:
        ValueError: a `decay_scope` other than "matrices" for a model without the ViT's encoder blocks.
    """
    scope = config.decay_scope
    names = {id(p): name for name, p in model.named_parameters()}
    if scope != "matrices" and not any(name.startswith("blocks.") for name in names.values()):
        raise ValueError(
            f"decay_scope {scope!r} names the encoder blocks of the book's ViT, which {type(model).__name__} does "
            "not have; use decay_scope 'matrices'"
        )
    if scope == "matrices" and config.qk_decay == 1.0:
        return default_decay(model, config)
    qk_factor = config.qk_decay if scope == "matrices" else 0.0
    decay = Decay({name for name, p in model.named_parameters() if decays(name, p, scope)})
    for weight, d in query_key_weights(model):
        rows = torch.full((weight.shape[0], 1), config.weight_decay)
        rows[: 2 * d] *= qk_factor
        decay.rows[names[id(weight)]] = rows
    return decay
