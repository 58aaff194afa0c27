"""The Vision Transformer of Dosovitskiy et al. (2021), small enough to read in one sitting.

Pre-norm encoder blocks, a GELU MLP, a learned CLS token and learned position embeddings, and a
linear head on the final CLS token. Attention has two paths that compute the same function:
the fused `scaled_dot_product_attention` (fast, the default) and an explicit softmax that also
returns the attention weights, taken from the very forward pass that produced the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from einops.layers.torch import Rearrange
from torch import nn

from .config import ViTConfig
from .patches import PATCHIFY

INIT_STD = 0.02  # the standard deviation of every fresh linear weight, the CLS token and the position embeddings


class PatchEmbedding(nn.Module):
    """Cut an image into patches and project each one linearly to `dim` features.

    (B, C, H, W) -> (B, num_patches, dim). Equivalent to a Conv2d with kernel and stride `patch_size`.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.to_patches = Rearrange(PATCHIFY, p1=config.patch_size, p2=config.patch_size)
        self.proj = nn.Linear(config.patch_dim, config.dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.to_patches(images))  # (b, n, d)


class Attention(nn.Module):
    """Multi-head self-attention: (B, N, dim) -> (B, N, dim), optionally with its (B, heads, N, N) weights."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.scale = config.head_dim**-0.5
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        dropout = self.dropout if self.training else 0.0
        if return_attention:
            weights = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)  # (b, h, n, n), rows sum to 1
            out = F.dropout(weights, dropout, self.training) @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.proj(out), weights


class MLP(nn.Module):
    """Position-wise feed-forward network: dim -> mlp_dim -> dim with GELU (layers named as in timm)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.dim, config.mlp_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.mlp_dim, config.dim)
        self.drop2 = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: in training, skip a residual branch for a random subset of samples."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.rate
        return x * keep.to(x.dtype) / (1.0 - self.rate)


class Block(nn.Module):
    """Pre-norm encoder block: x + Attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: ViTConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.dim)
        self.mlp = MLP(config)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path(attended)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


class ViT(nn.Module):
    """Vision Transformer classifier.

    `model(images)` returns logits (B, num_classes). `model(images, return_attention=True)` returns
    `(logits, attentions)` with attentions (B, depth, heads, n, n) for n = num_tokens; token 0 is CLS.
    """

    def __init__(self, config: ViTConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ViTConfig()
        self.patch_embed = PatchEmbedding(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, config.dim))
        self.dropout = nn.Dropout(config.dropout)
        rates = [config.drop_path * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(Block(config, rate) for rate in rates)
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.num_classes)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.cls_token, std=INIT_STD)
        nn.init.trunc_normal_(self.pos_embed, std=INIT_STD)

    def check_input(self, images: torch.Tensor) -> None:
        c, size = self.config.in_channels, self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, size, size):
            raise ValueError(f"ViT expects images shaped (B, {c}, {size}, {size}), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(
                f"ViT expects normalised float images, got {images.dtype}; "
                "pass uint8 images through vit_tutorial.data.normalise first, as the data pipeline does"
            )
        if images.dtype == torch.float64 and self.head.weight.dtype != torch.float64:
            raise ValueError(
                f"ViT expects images in its weights' {self.head.weight.dtype}, got float64; use images.float()"
            )

    def forward_features(
        self, images: torch.Tensor, return_attention: bool = False, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, H, W) -> normalised tokens (B, 1 + patches, dim) and, if asked, (B, depth, heads, n, n).

        `keep` (B, m) lists the patches to show, by index; the others are left out of the sequence, each
        kept patch with its own position embedding (`vit_tutorial.faithfulness` hides patches so).
        """
        self.check_input(images)
        x = self.patch_embed(images) + self.pos_embed[:, 1:]  # (b, n, d): each patch where it sits
        if keep is not None:
            x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))  # (b, m, d)
        cls = repeat(self.cls_token + self.pos_embed[:, :1], "1 1 d -> b 1 d", b=x.shape[0])
        x = self.dropout(torch.cat([cls, x], dim=1))  # (b, 1 + n, d)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, return_attention)
            attentions.append(weights)
        stacked = torch.stack(attentions, dim=1) if return_attention else None  # (b, depth, h, n, n)
        return self.norm(x), stacked

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Classify from the CLS token: (B, n, dim) -> (B, num_classes)."""
        return self.head(tokens[:, 0])

    def forward(self, images: torch.Tensor, return_attention: bool = False, keep: torch.Tensor | None = None):
        tokens, attentions = self.forward_features(images, return_attention, keep)
        logits = self.forward_head(tokens)
        return (logits, attentions) if return_attention else logits


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=INIT_STD)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
