"""Diagrams of the model, drawn with matplotlib from a `ViTConfig`, so the shapes on them are the model's.

Each function returns a `Figure`: the whole ViT, one pre-norm encoder block, and multi-head attention
(queries, keys and values). Boxes are the operations; the text beside each arrow is the shape of the
tensor that flows along it, for one image.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from .config import ViTConfig

COLOURS = {
    "data": "#e8eef7",
    "linear": "#fde7c7",
    "norm": "#e3f1e0",
    "attention": "#f6d5d5",
    "mlp": "#e9e0f3",
    "add": "#ffffff",
    "group": "#f7f7f7",
}


def _box(ax, x, y, w, h, text, kind, fontsize=9, weight="normal"):
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=COLOURS[kind],
            edgecolor="#555",
            linewidth=1.0,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, weight=weight, wrap=True)


def _arrow(ax, start, end, label="", side="right", style="-|>", rad=0.0, fontsize=8):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=12,
            color="#333",
            linewidth=1.0,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=0,
            shrinkB=0,
        )
    )
    if label:
        x = (start[0] + end[0]) / 2 + (0.08 if side == "right" else -0.08)
        y = (start[1] + end[1]) / 2
        ax.text(x, y, label, ha="left" if side == "right" else "right", va="center", fontsize=fontsize, color="#333")


def _canvas(width: float, height: float, xlim: tuple[float, float], ylim: tuple[float, float]):
    figure = Figure(figsize=(width, height), layout="constrained")
    ax = figure.subplots()
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_axis_off()
    return figure, ax


def vit_diagram(config: ViTConfig | None = None) -> Figure:
    """The whole model, bottom to top: patches, linear projection, CLS and positions, the blocks, the head."""
    c = config or ViTConfig()
    n, t, d = c.num_patches, c.num_tokens, c.dim
    figure, ax = _canvas(6.6, 6.4, (-3.3, 3.3), (-0.3, 10.4))
    steps = [  # (y, text, kind, height)
        (0.3, f"image  {c.in_channels}×{c.image_size}×{c.image_size}", "data", 0.55),
        (1.6, f"cut into {n} patches of {c.patch_size}×{c.patch_size} pixels, each flattened", "data", 0.55),
        (2.9, f"linear projection (patch embedding)  {c.patch_dim} → {d}", "linear", 0.55),
        (4.3, f"prepend the CLS token, add position embeddings\n(learned, one per token: {t}×{d})", "data", 0.8),
        (
            6.0,
            f"{c.depth} × pre-norm encoder block\n({c.heads}-head self-attention, MLP {d} → {c.mlp_dim} → {d})",
            "attention",
            1.0,
        ),
        (7.6, "LayerNorm", "norm", 0.55),
        (8.9, f"take the CLS token; linear head  {d} → {c.num_classes}", "linear", 0.55),
        (10.0, f"{c.num_classes} class scores (logits)", "data", 0.5),
    ]
    width = 4.6
    for y, text, kind, h in steps:
        _box(ax, 0, y, width, h, text, kind)
    outputs = [
        f"{c.in_channels}×{c.image_size}×{c.image_size}",
        f"{n}×{c.patch_dim}",
        f"{n}×{d}",
        f"{t}×{d}",
        f"{t}×{d}",
        f"{t}×{d}",
        f"{c.num_classes}",
    ]  # the shape each box hands to the next
    for (y0, _, _, h0), (y1, _, _, h1), label in zip(steps, steps[1:], outputs):
        _arrow(ax, (0, y0 + h0 / 2), (0, y1 - h1 / 2), label)
    ax.set_title(f"The Vision Transformer of this book: {t} tokens of width {d}", fontsize=10)
    return figure


def block_diagram(config: ViTConfig | None = None) -> Figure:
    """One pre-norm encoder block: x + Attention(LN(x)), then x + MLP(LN(x)), with the residual paths."""
    c = config or ViTConfig()
    t, d = c.num_tokens, c.dim
    figure, ax = _canvas(6.2, 6.0, (-3.2, 3.2), (-0.4, 10.0))
    shape = f"{t}×{d}"
    _box(ax, 0, 0.2, 2.6, 0.5, f"tokens in  {shape}", "data")
    _box(ax, 0.6, 1.7, 2.4, 0.5, "LayerNorm", "norm")
    _box(ax, 0.6, 3.0, 2.9, 0.75, f"multi-head self-attention\n{c.heads} heads of {c.head_dim}", "attention")
    _box(ax, 0, 4.4, 0.55, 0.5, "+", "add", fontsize=12, weight="bold")
    _box(ax, 0.6, 5.6, 2.4, 0.5, "LayerNorm", "norm")
    _box(ax, 0.6, 6.9, 2.9, 0.75, f"MLP  {d} → {c.mlp_dim} → {d}\n(GELU between)", "mlp")
    _box(ax, 0, 8.3, 0.55, 0.5, "+", "add", fontsize=12, weight="bold")
    _box(ax, 0, 9.6, 2.6, 0.5, f"tokens out  {shape}", "data")
    _arrow(ax, (0.6, 0.45), (0.6, 1.45), shape)
    _arrow(ax, (0.6, 1.95), (0.6, 2.62), shape)
    _arrow(ax, (0.6, 3.38), (0.15, 4.15))
    _arrow(ax, (-0.3, 0.45), (-0.3, 4.18), "residual: x", side="left")
    _arrow(ax, (0.2, 4.65), (0.6, 5.35), shape)
    _arrow(ax, (0.6, 5.85), (0.6, 6.52), shape)
    _arrow(ax, (0.6, 7.28), (0.15, 8.05))
    _arrow(ax, (-0.2, 4.65), (-0.2, 8.05), "residual", side="left")
    _arrow(ax, (0, 8.55), (0, 9.35), shape)
    ax.set_title("A pre-norm encoder block: normalise, transform, add back", fontsize=10)
    return figure


def attention_diagram(config: ViTConfig | None = None) -> Figure:
    """Multi-head self-attention: queries, keys and values, split into heads, softmax(QKᵀ/√d)·V, merged."""
    c = config or ViTConfig()
    t, d, h, hd = c.num_tokens, c.dim, c.heads, c.head_dim
    figure, ax = _canvas(6.8, 6.2, (-3.4, 3.4), (-0.4, 10.3))
    _box(ax, 0, 0.2, 3.0, 0.5, f"tokens X  {t}×{d}", "data")
    for x, name in ((-2.2, "Q = X W_q"), (0, "K = X W_k"), (2.2, "V = X W_v")):
        _box(ax, x, 1.7, 1.8, 0.55, f"{name}\n{t}×{d}", "linear", fontsize=8)
        _arrow(ax, (0, 0.45), (x, 1.42))
    ax.add_patch(
        FancyBboxPatch(
            (-3.25, 2.55),
            6.5,
            4.75,
            boxstyle="round,pad=0.02,rounding_size=0.1",
            facecolor=COLOURS["group"],
            edgecolor="#999",
            linestyle="--",
        )
    )
    ax.text(-3.15, 7.2, f"in each of the {h} heads ({hd} of the {d} features)", fontsize=8, va="top", color="#555")
    for x, name in ((-2.2, "Q_h"), (0, "K_h"), (2.2, "V_h")):
        _box(ax, x, 3.2, 1.2, 0.45, f"{name}  {t}×{hd}", "data", fontsize=8)
        _arrow(ax, (x, 1.98), (x, 2.97))
    _box(ax, -1.1, 4.5, 2.9, 0.65, f"scores = Q_h K_hᵀ / √{hd}\n{t}×{t}", "attention", fontsize=8)
    _arrow(ax, (-2.2, 3.43), (-1.6, 4.17))
    _arrow(ax, (0, 3.43), (-0.6, 4.17))
    _box(
        ax,
        -1.1,
        5.75,
        2.9,
        0.55,
        f"softmax over each row: weights {t}×{t}\n(row 0: where CLS looks)",
        "attention",
        fontsize=8,
    )
    _arrow(ax, (-1.1, 4.83), (-1.1, 5.47))
    _box(ax, 0.55, 6.5, 2.2, 0.5, f"weights · V_h  {t}×{hd}", "linear", fontsize=8)
    _arrow(ax, (-1.1, 6.03), (-0.3, 6.25))
    _arrow(ax, (2.2, 3.43), (1.4, 6.25))
    _box(ax, 0, 8.0, 3.6, 0.5, f"concatenate the {h} heads  {t}×{d}", "data", fontsize=8)
    _arrow(ax, (0.55, 6.75), (0.3, 7.75))
    _box(ax, 0, 9.1, 3.6, 0.5, f"output projection W_o  {d} → {d}", "linear", fontsize=8)
    _arrow(ax, (0, 8.25), (0, 8.85))
    _arrow(ax, (0, 9.35), (0, 10.05), f"{t}×{d}")
    ax.set_title("Multi-head self-attention", fontsize=10)
    return figure


def patchify_diagram(config: ViTConfig | None = None) -> Figure:
    """How `patchify` splits the axes: the image's height and width each become (grid, pixels), the two grid
    axes move to the front, and each patch is flattened to one token."""
    c = config or ViTConfig()
    g, p = c.grid_size, c.patch_size
    figure, ax = _canvas(7.0, 3.3, (0, 14), (0, 6.6))
    cell = 0.5
    # the image, one square per patch, with the rows of pixels of the first patch row marked
    for row in range(g):
        for col in range(g):
            ax.add_patch(
                FancyBboxPatch(
                    (0.4 + col * cell * 2, 4.6 - row * cell * 2),
                    cell * 2,
                    cell * 2,
                    boxstyle="square,pad=0",
                    facecolor="#fde7c7" if row == 0 else "#e8eef7",
                    edgecolor="#555",
                )
            )
            ax.text(
                0.4 + (col + 0.5) * cell * 2,
                4.6 - (row - 0.5) * cell * 2,
                str(row * g + col),
                ha="center",
                va="center",
                fontsize=8,
            )
    ax.text(2.4, 6.25, f"({c.in_channels}, {c.image_size}, {c.image_size}): c H W", ha="center", fontsize=9)
    ax.text(2.4, 0.25, f"H = {g} rows y × {p} pixels p1\nW = {g} columns x × {p} pixels p2", ha="center", fontsize=8)
    _arrow(ax, (4.8, 3.6), (6.2, 3.6), "")
    ax.text(5.5, 4.0, "split", ha="center", fontsize=8)
    ax.text(
        7.9, 4.3, f"({c.in_channels}, {g}, {p}, {g}, {p})\nc  y  p1  x  p2", ha="center", fontsize=9, family="monospace"
    )
    _arrow(ax, (7.9, 3.5), (7.9, 2.6), "")
    ax.text(8.1, 3.05, "grid axes first", ha="left", fontsize=8)
    ax.text(
        7.9, 2.0, f"({g}, {g}, {p}, {p}, {c.in_channels})\ny  x  p1  p2  c", ha="center", fontsize=9, family="monospace"
    )
    _arrow(ax, (9.7, 2.1), (10.7, 2.1), "")
    ax.text(10.2, 2.45, "flatten", ha="center", fontsize=8)
    for k in range(min(c.num_patches, 6)):
        _box(ax, 12.4, 5.6 - k * 0.55, 2.6, 0.42, f"token {k}: {c.patch_dim} numbers", "linear", fontsize=7)
    ax.text(
        12.4,
        2.0,
        f"⋮\n{c.num_patches} tokens\n({c.num_patches}, {c.patch_dim}): n (p1 p2 c)",
        ha="center",
        va="center",
        fontsize=8,
    )
    return figure


def token_sequence_diagram(config: ViTConfig | None = None) -> Figure:
    """What the encoder reads: the CLS token prepended to the projected patches, and one learned position
    embedding added to each of the n tokens."""
    c = config or ViTConfig()
    shown = 6
    figure, ax = _canvas(7.0, 2.9, (-0.6, shown + 2.2), (-0.2, 3.6))
    labels = ["CLS"] + [f"patch {k}" for k in range(shown - 1)] + ["…"] + [f"patch {c.num_patches - 1}"]
    for i, label in enumerate(labels):
        x = i * 1.0
        if label == "…":
            ax.text(x, 1.7, "…", ha="center", va="center", fontsize=12)
            continue
        _box(ax, x, 2.9, 0.85, 0.45, label, "attention" if label == "CLS" else "linear", fontsize=7)
        ax.text(x, 2.25, "+", ha="center", va="center", fontsize=11)
        position = 0 if label == "CLS" else (c.num_tokens - 1 if i == len(labels) - 1 else i)
        _box(ax, x, 1.6, 0.85, 0.45, f"pos {position}", "norm", fontsize=7)
        _arrow(ax, (x, 1.35), (x, 0.75))
    ax.text(
        (len(labels) - 1) / 2,
        0.35,
        f"{c.num_tokens} tokens of {c.dim} features: ({c.num_tokens}, {c.dim})",
        ha="center",
        fontsize=9,
    )
    ax.text(-0.55, 2.9, "learned\nor projected", ha="right", va="center", fontsize=7)
    ax.text(-0.55, 1.6, "learned,\none a token", ha="right", va="center", fontsize=7)
    return figure


def rollout_diagram(depth: int = 12) -> Figure:
    """Attention rollout: each layer's head-averaged attention plus the identity (the residual path), rows
    renormalised, multiplied from the first layer to the last; the CLS row of the product is the map."""
    figure, ax = _canvas(7.0, 2.6, (-0.2, 10.8), (0, 3.6))
    for x, layer in ((1.1, 1), (3.5, 2), (5.9, 3), (9.5, depth)):
        _box(ax, x, 2.45, 2.1, 0.95, f"layer {layer}: Â{layer} =\nnorm(heads' mean + I)", "attention", fontsize=7)
    for x in (2.3, 4.7):
        ax.text(x, 2.45, "→", ha="center", va="center", fontsize=11)
    ax.text(7.7, 2.45, "→ ··· →", ha="center", va="center", fontsize=10)
    ax.text(5.3, 1.3, f"R = Â{depth} ··· Â2 Â1   (every row of every factor sums to 1)", ha="center", fontsize=9)
    ax.text(
        5.3,
        0.5,
        "the map: R[CLS, patches], how much of each patch flows into the final CLS token",
        ha="center",
        fontsize=8,
    )
    return figure


def receptive_field_diagram() -> Figure:
    """What one output of a layer can see: a 3x3 convolution sees its 9 neighbours, growing by 2 pixels a layer;
    self-attention sees every token from the first layer on."""
    figure = Figure(figsize=(7.0, 3.0), layout="constrained")
    left, right = figure.subplots(1, 2)
    for ax in (left, right):
        ax.set_xlim(0, 8)
        ax.set_ylim(0, 8)
        ax.set_aspect("equal")
        ax.set_axis_off()
    for layer, colour in ((3, "#f6d5d5"), (2, "#fde7c7"), (1, "#e3f1e0")):
        start = 4 - layer
        left.add_patch(
            FancyBboxPatch(
                (start, start), 2 * layer, 2 * layer, boxstyle="square,pad=0", facecolor=colour, edgecolor="#555"
            )
        )
        left.text(start + 0.1, start + 2 * layer - 0.45, f"{2 * layer + 1}×{2 * layer + 1} after {layer}", fontsize=7)
    left.add_patch(FancyBboxPatch((3.6, 3.6), 0.8, 0.8, boxstyle="square,pad=0", facecolor="#4c72b0"))
    left.set_title("3x3 convolutions: the view grows\nby two pixels a layer", fontsize=9)
    for row in range(4):
        for col in range(4):
            right.add_patch(
                FancyBboxPatch((col * 2, row * 2), 2, 2, boxstyle="square,pad=0", facecolor="#f6d5d5", edgecolor="#555")
            )
    right.add_patch(FancyBboxPatch((2, 4), 2, 2, boxstyle="square,pad=0", facecolor="#4c72b0", edgecolor="#555"))
    for row in range(4):
        for col in range(4):
            if (row, col) != (2, 1):
                right.annotate(
                    "",
                    xy=(col * 2 + 1, row * 2 + 1),
                    xytext=(3, 5),
                    arrowprops={"arrowstyle": "-", "color": "#888", "lw": 0.5},
                )
    right.set_title("self-attention: every patch sees\nevery other from layer 1", fontsize=9)
    return figure
