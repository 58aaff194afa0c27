"""Pictures for the book. Every function returns a matplotlib `Figure` and changes no global state.

Figures are made with `matplotlib.figure.Figure`, not pyplot, so nothing is shown or kept open
behind the caller's back; in Jupyter a returned figure displays itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import torch
from matplotlib.figure import Figure

from .attention_maps import (
    attention_overlay,
    attention_rollout,
    cls_attention,
    flat_threshold,
    map_spread,
    overlay_steps,
    shared_scale,
)
from .data import CLASSES, Split
from .errors import require_int, require_number


def to_display(image: torch.Tensor):
    """(3, H, W) uint8 or float in [0, 1] -> (H, W, 3) float numpy array in [0, 1] for `imshow`."""
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    return image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def image_grid(
    images: torch.Tensor, titles: Sequence[str] | None = None, *, ncols: int = 8, size: float = 1.3
) -> Figure:
    """A grid of images (N, 3, H, W), uint8 or float in [0, 1], with optional titles."""
    require_int("ncols", ncols)
    require_number("size", size, low=0.1, high=20.0)
    n = images.shape[0]
    nrows = -(-n // ncols)
    figure = Figure(figsize=(ncols * size, nrows * size * (1.25 if titles else 1.0)), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < n:
            ax.imshow(to_display(images[i]))
            if titles:
                ax.set_title(titles[i], fontsize=8)
    return figure


def class_samples(split: Split, per_class: int = 8, seed: int = 0) -> Figure:
    """One row per class with `per_class` random examples, the class name on the left."""
    require_int("per_class", per_class, high=64)
    generator = torch.Generator().manual_seed(seed)
    figure = Figure(figsize=(per_class * 0.72 + 1.0, len(CLASSES) * 0.72), layout="constrained")
    axes = figure.subplots(len(CLASSES), per_class, squeeze=False)
    labels = split.labels.cpu()
    for row, name in enumerate(CLASSES):
        members = torch.nonzero(labels == row).flatten()
        picks = members[torch.randperm(len(members), generator=generator)[:per_class]]
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(picks):
                ax.imshow(to_display(split.images[picks[col]]))
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    return figure


def image_rows(rows: Mapping[str, torch.Tensor], *, size: float = 1.0, label_width: float = 1.6) -> Figure:
    """One row per entry, its name on the left: rows of images (N, 3, H, W), uint8 or float in [0, 1]."""
    ncols = max(images.shape[0] for images in rows.values())
    figure = Figure(figsize=(ncols * size + label_width, len(rows) * size), layout="constrained")
    axes = figure.subplots(len(rows), ncols, squeeze=False)
    for row, (name, images) in enumerate(rows.items()):
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < images.shape[0]:
                ax.imshow(to_display(images[col]))
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    return figure


def _short(value: float) -> str:
    """A bar's label: whole numbers with thousands separators, others to three significant digits."""
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 1000 else f"{value:.3g}"


def bar_chart(
    values: Sequence[float] | Mapping[str, Sequence[float]], labels: Sequence[str], *, title: str = "", ylabel: str = ""
) -> Figure:
    """Bars over `labels`; given a mapping name -> values, one group of side-by-side bars per label."""
    series = dict(values) if isinstance(values, Mapping) else {"": values}
    figure = Figure(figsize=(7 + (len(series) - 1) * 1.5, 3), layout="constrained")
    ax = figure.subplots()
    width = 0.8 / len(series)
    for i, (name, row) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        bars = ax.bar(
            [k + offset for k in range(len(row))],
            row,
            width=width,
            label=name or None,
            color=None if name else "#4c72b0",
        )
        if len(series) <= 2:  # with more, the labels would overlap; a table beside the chart has the numbers
            ax.bar_label(bars, labels=[_short(v) for v in row], fontsize=7 if len(series) > 1 else 8)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return figure


def patch_grid(image: torch.Tensor, patch_size: int) -> Figure:
    """Left: the image with its patch grid. Right: the patches pulled apart, in token order.

    With up to 4x4 patches every patch is numbered; with more, numbers that small would be illegible in a
    book's column, so the rows and columns are numbered on the axes (patch k = row * g + column) and only
    the first row of patches is pulled apart."""
    picture = to_display(image)
    size = picture.shape[0]
    grid = size // patch_size
    few = grid <= 4
    figure = Figure(figsize=(9, 4.2) if few else (9, 4.6), layout="constrained")
    left, right = figure.subfigures(1, 2, width_ratios=[1, 1.1])  # type: ignore[misc]  # an array of two
    ax = left.subplots()
    ax.imshow(picture, extent=(0, size, size, 0))
    for k in range(1, grid):
        ax.axhline(k * patch_size, color="white", lw=1.5 if few else 0.6)
        ax.axvline(k * patch_size, color="white", lw=1.5 if few else 0.6)
    if few:
        for k in range(grid * grid):
            row, col = divmod(k, grid)
            ax.text(
                (col + 0.5) * patch_size,
                (row + 0.5) * patch_size,
                str(k),
                color="yellow",
                ha="center",
                va="center",
                fontsize=14,
                weight="bold",
            )
        ax.set_axis_off()
    else:
        every = 1 if grid <= 8 else 2
        ticks = [(k + 0.5) * patch_size for k in range(0, grid, every)]
        ax.set_xticks(ticks, [str(k) for k in range(0, grid, every)], fontsize=9)
        ax.set_yticks(ticks, [str(k) for k in range(0, grid, every)], fontsize=9)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    ax.set_title(f"{size}x{size} image, {grid}x{grid} patches of {patch_size}x{patch_size}", fontsize=10)
    shown = grid * grid if few else grid
    columns = grid if few else min(grid, 7)
    rows = -(-shown // columns)
    axes = right.subplots(rows, columns, squeeze=False)
    for sub in axes.flat:
        sub.set_axis_off()
    for k, sub in enumerate(axes.flat[:shown]):
        row, col = divmod(k, grid)
        sub.imshow(picture[row * patch_size : (row + 1) * patch_size, col * patch_size : (col + 1) * patch_size])
        sub.set_title(str(k), fontsize=9)
    right.suptitle("the patches, in token order" if few else f"row 0: patches 0 to {grid - 1}, in token order")
    return figure


def matrix_figure(
    matrix: torch.Tensor,
    *,
    title: str = "",
    xlabels: Sequence[str] | None = None,
    ylabels: Sequence[str] | None = None,
    cmap: str = "viridis",
    annotate: bool = False,
    colorbar: bool = True,
    size: float = 5.0,
) -> Figure:
    """A heatmap of a 2-D tensor: attention weights, similarities, a confusion matrix."""
    values = matrix.detach().float().cpu()
    figure = Figure(figsize=(size * 1.15, size), layout="constrained")
    ax = figure.subplots()
    shown = ax.imshow(values.numpy(), cmap=cmap)
    if colorbar:
        figure.colorbar(shown, ax=ax, shrink=0.8)
    if xlabels is not None:
        ax.set_xticks(range(len(xlabels)), xlabels, rotation=90, fontsize=8)
    if ylabels is not None:
        ax.set_yticks(range(len(ylabels)), ylabels, fontsize=8)
    if annotate:
        for (i, j), value in zip(
            torch.cartesian_prod(torch.arange(values.shape[0]), torch.arange(values.shape[1])).tolist(),
            values.flatten().tolist(),
        ):
            ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=8, color=_text_colour(shown, value))
    ax.set_title(title)
    return figure


def _text_colour(shown, value: float) -> str:
    """Black on light cells, white on dark ones, judged from the colour the cell is actually drawn in."""
    red, green, blue, _ = shown.cmap(shown.norm(value))
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"


def head_matrices(
    image: torch.Tensor, weights: torch.Tensor, *, labels: Sequence[str] | None = None, title: str = ""
) -> Figure:
    """The image, then one block's attention weights: the mean over heads and each head, on one colour scale.

    Args:
        image: (3, H, W) uint8 or float in [0, 1].
        weights: (heads, n, n), rows summing to 1 (row = query, column = key).
    """
    heads = weights.shape[0]
    values = weights.detach().float().cpu()
    panels = [("mean of the heads", values.mean(0))] + [(f"head {h + 1}", values[h]) for h in range(heads)]
    ncols = 3
    nrows = -(-(len(panels) + 1) // ncols)
    figure = Figure(figsize=(2.3 * ncols + 0.6, 2.35 * nrows), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False).flat
    axes[0].imshow(to_display(image))
    axes[0].set_title("the image", fontsize=9)
    axes[0].set_axis_off()
    top = values.max().item()
    for ax, (name, matrix) in zip(axes[1:], panels):
        shown = ax.imshow(matrix.numpy(), cmap="viridis", vmin=0, vmax=top)
        ax.set_title(name, fontsize=9)
        ticks = range(0, matrix.shape[0], 4)
        ax.set_xticks(ticks, [labels[t] for t in ticks] if labels else list(ticks), fontsize=6)
        ax.set_yticks(ticks, [labels[t] for t in ticks] if labels else list(ticks), fontsize=6)
    for ax in axes[len(panels) + 1 :]:
        ax.set_axis_off()
    figure.colorbar(shown, ax=list(axes[1 : len(panels) + 1]), shrink=0.7, label="attention weight")
    figure.suptitle(title, fontsize=10)
    return figure


def position_similarity(pos_embed: torch.Tensor, grid: int, *, title: str = "") -> Figure:
    """Cosine similarity of each patch's position embedding with every other one, laid out on the grid.

    Args:
        pos_embed: (num_patches, dim) position embeddings of the patches (without the CLS token).
        grid: patches per side.
    """
    normed = torch.nn.functional.normalize(pos_embed.detach().float().cpu(), dim=-1)
    similarity = (normed @ normed.T).reshape(grid, grid, grid, grid)  # (row, col, row', col')
    figure = Figure(figsize=(grid * 1.4 + 1, grid * 1.4), layout="constrained")
    axes = figure.subplots(grid, grid, squeeze=False)
    for row in range(grid):
        for col in range(grid):
            shown = axes[row, col].imshow(similarity[row, col].numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
        axes[row, 0].set_ylabel(str(row))
    for col in range(grid):
        axes[-1, col].set_xlabel(str(col))
    figure.colorbar(shown, ax=axes, shrink=0.6, label="cosine similarity")
    figure.suptitle(title)
    return figure


def line_plot(
    series: dict[str, Sequence[float]],
    *,
    x: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
) -> Figure:
    """One line per series over `x` (1, 2, ... if None); `x` may map each series name to its own x values."""
    many = len(series) > 10  # more lines than the default colours: an ordered colormap, the legend outside
    figure = Figure(figsize=(6.6 if many else 6, 3.2), layout="constrained")
    ax = figure.subplots()
    shades = matplotlib.colormaps["viridis"]
    colors = [shades(i / (len(series) - 1)) if many else None for i in range(len(series))]
    for (name, values), color in zip(series.items(), colors):
        xs = x[name] if isinstance(x, Mapping) else x
        ax.plot(
            xs if xs is not None else range(1, len(values) + 1),
            values,
            label=name,
            color=color,
            marker="o" if len(values) < 8 else None,
        )
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    elif len(series) > 1:
        ax.legend()
    return figure


# Attention pictures. `image` is (3, H, W) in [0, 1]; `attentions` is one image's (depth, heads, n, n).


def _map_panel(ax, values: torch.Tensor, title: str, cmap: str = "inferno", **imshow) -> None:
    ax.imshow(
        values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else values, cmap=cmap, **imshow
    )
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def _heatmap(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The grid resized to the image and min-max normalised: (H, W) in [0, 1]."""
    return overlay_steps(image, grid)["normalised"]


FLAT_COLOUR = "#c77700"


def _mark_spread(ax, grid: torch.Tensor, tokens: int, *, below: bool = True) -> bool:
    """Write a map's spread under its panel; frame the panel and say "flat" where the spread is below
    `attention.flat_threshold` (min-max has then stretched noise to full contrast). True when flat."""
    from matplotlib.patches import Rectangle

    spread = float(map_spread(grid))
    flat = spread < flat_threshold(tokens)
    text = f"spread {spread:.3f}" + (" flat" if flat else "")
    ax.text(
        0.5,
        -0.04 if below else 1.02,
        text,
        transform=ax.transAxes,
        ha="center",
        va="top" if below else "bottom",
        fontsize=6.5,
        color=FLAT_COLOUR if flat else "#444",
        weight="bold" if flat else "normal",
    )
    if flat:
        ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, lw=2.5, ls="--", ec=FLAT_COLOUR))
    return flat


def attention_triptych(
    image: torch.Tensor, grid: torch.Tensor, *, amplify: float = 2.0, title: str = "", cmap: str = "inferno"
) -> Figure:
    """Image | attention heatmap | overlay, for one (y, x) attention grid; its spread written under the map."""
    figure = Figure(figsize=(7.5, 2.8), layout="constrained")
    axes = figure.subplots(1, 3)
    _map_panel(axes[0], to_display(image), "image")
    _map_panel(axes[1], _heatmap(image, grid), "attention (resized, min-max)", cmap)
    _mark_spread(axes[1], grid, grid.numel() + 1)
    _map_panel(axes[2], to_display(attention_overlay(image, grid, amplify)), f"overlay (amplify {amplify:g})")
    figure.suptitle(title)
    return figure


def overlay_pipeline(image: torch.Tensor, attentions: torch.Tensor, *, layer: int = -1, amplify: float = 2.0) -> Figure:
    """The classic overlay step by step: the heads' CLS rows, their mean on the grid, resized,
    normalised, multiplied with the image, amplified and clipped. Sized for a book column (about 7 inches)."""
    heads = attentions.shape[1]
    grid = cls_attention(attentions, layer=layer)
    steps = overlay_steps(image, grid, amplify)
    figure = Figure(figsize=(7.2, 3.5), layout="constrained")
    top, bottom = figure.subfigures(2, 1)  # type: ignore[misc]  # an array of two
    rows = top.subplots(1, heads + 1)
    for head in range(heads):
        _map_panel(rows[head], cls_attention(attentions, layer=layer, head=head), f"head {head + 1}")
    _map_panel(rows[heads], grid, "2. mean of heads")
    _mark_spread(rows[heads], grid, attentions.shape[-1])
    top.suptitle("1. each head's CLS row on the 4x4 grid", fontsize=9)
    panels = bottom.subplots(1, 5)
    _map_panel(panels[0], steps["resized"], "3. resized")
    _map_panel(panels[1], steps["normalised"], "4. min-max")
    _map_panel(panels[2], to_display(image), "the image")
    _map_panel(panels[3], to_display(steps["product"]), "5. image × map")
    _map_panel(panels[4], to_display(steps["overlay"]), f"6. × {amplify:g}, clipped")
    return figure


def layers_figure(
    image: torch.Tensor,
    attentions: torch.Tensor,
    *,
    amplify: float = 2.0,
    head: int | None = None,
    rollout: bool = True,
    ncols: int = 7,
) -> Figure:
    """CLS attention in every layer, plus rollout: for each, the heatmap above its overlay, `ncols` to a row;
    each map's spread under it, and flat maps framed (`attention.flat_threshold`)."""
    depth, tokens = attentions.shape[0], attentions.shape[-1]
    grids = [cls_attention(attentions, layer=i, head=head) for i in range(depth)]
    titles = [f"layer {i + 1}" for i in range(depth)]
    if rollout:
        grids.append(attention_rollout(attentions))
        titles.append("rollout")
    bands = -(-len(grids) // ncols)
    figure = Figure(figsize=(1.0 * ncols, 2.35 * bands), layout="constrained")
    axes = figure.subplots(2 * bands, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (grid, title) in enumerate(zip(grids, titles)):
        band, col = divmod(i, ncols)
        _map_panel(axes[2 * band, col], _heatmap(image, grid), title)
        if title != "rollout":
            _mark_spread(axes[2 * band + 1, col], grid, tokens)
        _map_panel(axes[2 * band + 1, col], to_display(attention_overlay(image, grid, amplify)), "")
    return figure


def heads_figure(image: torch.Tensor, attentions: torch.Tensor, *, layer: int = -1, amplify: float = 2.0) -> Figure:
    """Each head's CLS attention in one layer, and their mean (top: heatmaps, bottom: overlays, with each map's
    spread; flat ones framed)."""
    heads, tokens = attentions.shape[1], attentions.shape[-1]
    grids = [cls_attention(attentions, layer=layer, head=h) for h in range(heads)] + [
        cls_attention(attentions, layer=layer)
    ]
    titles = [f"head {h + 1}" for h in range(heads)] + ["mean"]
    figure = Figure(figsize=(1.5 * len(grids), 3.4), layout="constrained")
    axes = figure.subplots(2, len(grids), squeeze=False)
    for i, (grid, title) in enumerate(zip(grids, titles)):
        _map_panel(axes[0, i], _heatmap(image, grid), title)
        _map_panel(axes[1, i], to_display(attention_overlay(image, grid, amplify)), "")
        _mark_spread(axes[1, i], grid, tokens)
    shown_layer = layer + 1 if layer >= 0 else attentions.shape[0] + layer + 1
    figure.suptitle(f"layer {shown_layer}", fontsize=9)
    return figure


def minmax_and_shared(image: torch.Tensor, attentions: torch.Tensor, layers: Sequence[int], *, amplify: float = 2.0):
    """What the min-max step does to a flat map: for each of `layers` (0-based), the overlay of the classic
    recipe (every map stretched to full contrast) next to the same map on one scale shared by all of the
    image's layers (0 to its largest patch weight), where a flat map stays flat."""
    shared = shared_scale(attentions)
    tokens = attentions.shape[-1]
    figure = Figure(figsize=(1.45 * len(layers) + 1.3, 3.6), layout="constrained")
    axes = figure.subplots(2, len(layers), squeeze=False)
    for col, layer in enumerate(layers):
        grid = cls_attention(attentions, layer=layer)
        _map_panel(axes[0, col], to_display(attention_overlay(image, grid, amplify)), f"layer {layer + 1}")
        _map_panel(axes[1, col], to_display(attention_overlay(image, grid, amplify, scale=shared)), "")
        _mark_spread(axes[1, col], grid, tokens)
    _label_rows(axes, ("min-max\n(classic)", "shared\nscale"))
    return figure


def compare_maps(
    images: torch.Tensor,
    grids: dict[str, torch.Tensor],
    *,
    titles: Sequence[str] | None = None,
    amplify: float = 2.0,
    spreads: bool = True,
) -> Figure:
    """One column per image: the image on top, then the overlay of each named (B, y, x) map, with its spread
    under it (flat maps framed) unless `spreads` is False. A map named "rollout..." gets no flat judgement:
    its weights are not one layer's attention.

    For example the last layer against the rollout."""
    n = images.shape[0]
    figure = Figure(figsize=(1.3 * n + 0.9, 1.6 * (1 + len(grids))), layout="constrained")
    axes = figure.subplots(1 + len(grids), n, squeeze=False)
    for col in range(n):
        _map_panel(axes[0, col], to_display(images[col]), titles[col] if titles else "")
        for row, (name, grid) in enumerate(grids.items(), start=1):
            _map_panel(axes[row, col], to_display(attention_overlay(images[col], grid[col], amplify)), "")
            if spreads and not name.startswith("rollout"):
                _mark_spread(axes[row, col], grid[col], grid[col].numel() + 1)
    _label_rows(axes, ["image", *grids])
    return figure


def _label_rows(axes, names: Sequence[str]) -> None:
    """Name each row of a grid of pictures on its left, without showing the first column's axes."""
    for row, name in enumerate(names):
        axes[row, 0].set_axis_on()
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        for spine in axes[row, 0].spines.values():
            spine.set_visible(False)
        axes[row, 0].set_ylabel(name, fontsize=8)


def attention_gif(
    image: torch.Tensor, attentions: torch.Tensor, path, *, amplify: float = 2.0, seconds_per_frame: float = 0.6
):
    """Write an animated GIF: one frame per layer, showing the overlay of each head and of their mean.

    Returns the path written.
    """
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    frames = []
    for layer in range(attentions.shape[0]):
        figure = heads_figure(image, attentions, layer=layer, amplify=amplify)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        frames.append(Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(seconds_per_frame * 1000), loop=0)
    return path
