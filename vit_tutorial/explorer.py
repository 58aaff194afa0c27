"""An attention explorer: live with ipywidgets in Jupyter, and static (HTML + JavaScript) for the book.

Both views show the same three pictures for a chosen image, layer (or rollout) and head (or mean):
the image, the classic overlay (`attention.attention_overlay`) and the attention map laid over the
image in a colormap with a chosen opacity, next to the model's top-5 prediction.

`AttentionExplorer(model, split).widget` is the live view; it needs a running kernel.
`static_explorer_html(model, split)` precomputes every map for a set of test images and returns one
self-contained HTML page fragment (no network, no CDN) that redraws them in the browser.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from importlib import resources

import torch
from torch import nn

from .attention import attend, attention_overlay, attention_rollout, cls_attention, cls_spread, overlay_steps
from .data import CLASSES, Split
from .errors import ImageError
from .evaluate import predict_logits
from .model import ViT
from .predict import load_image

COLORMAPS = ("inferno", "viridis", "magma", "jet", "gray")
ROLLOUT = "rollout"


def colormap_lut(name: str) -> torch.Tensor:
    """A matplotlib colormap as a (256, 3) table of RGB values in [0, 1]."""
    import matplotlib

    return torch.tensor(matplotlib.colormaps[name](torch.linspace(0, 1, 256).numpy())[:, :3], dtype=torch.float32)


def blend(image: torch.Tensor, grid: torch.Tensor, *, opacity: float = 0.5, cmap: str = "inferno") -> torch.Tensor:
    """The attention map (resized, min-max normalised) in a colormap, laid over the image: (3, H, W) in [0, 1]."""
    normalised = overlay_steps(image, grid)["normalised"]  # (h, w)
    lut = colormap_lut(cmap)
    colours = lut[(normalised * 255).round().long()].permute(2, 0, 1)  # (3, h, w)
    return (1 - opacity) * image + opacity * colours


def attention_maps(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (B, classes) and every map the explorer can show, (B, depth + 1, heads + 1, y, x).

    Along axis 1: the layers, then rollout (mean head fusion). Along axis 2: the mean over heads,
    then each head (the rollout row repeats its one map). `images`: (B, 3, H, W) in [0, 1].
    """
    logits, attentions = attend(model, images)
    depth, heads = attentions.shape[1:3]
    per_layer = [
        torch.stack(
            [cls_attention(attentions, layer)] + [cls_attention(attentions, layer, h) for h in range(heads)], dim=1
        )
        for layer in range(depth)
    ]  # depth x (b, heads + 1, y, x)
    rollout = attention_rollout(attentions)[:, None].expand(-1, heads + 1, -1, -1)
    return logits.softmax(-1), torch.stack([*per_layer, rollout], dim=1)


def select_examples(labels: torch.Tensor, per_class: int = 10, seed: int = 0) -> list[int]:
    """`per_class` random indices of each class, in class order."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(len(CLASSES)):
        members = torch.nonzero(labels.cpu() == label).flatten()
        chosen += members[torch.randperm(len(members), generator=generator)[:per_class]].tolist()
    return chosen


def opening_view(model: nn.Module, split: Split, indices: list[int], every: int = 20) -> tuple[int, int]:
    """Where an explorer of `split[indices]` best opens: the layer (0-based) whose CLS attention is most uneven
    over every `every`-th image of `split` (`attention.cls_spread`), and the position among `indices` of the
    first image the model classifies correctly (0 if it gets none right)."""
    _, attentions = attend(model, split.images[::every])
    layer = int(cls_spread(attentions).argmax())
    logits, _ = attend(model, split.images[indices])
    right = (logits.argmax(-1) == split.labels[indices].cpu()).nonzero().flatten()
    return layer, int(right[0]) if len(right) else 0


def _png(image: torch.Tensor) -> bytes:
    from PIL import Image

    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class AttentionExplorer:
    """The live explorer. `explorer.widget` is the ipywidget to display.

    Args:
        model: a ViT (for example `vit_tutorial.load_pretrained()`).
        split: test images to browse; predictions for all of them are computed once, for filtering.
    """

    def __init__(self, model: ViT, split: Split) -> None:
        import ipywidgets as w

        self.model = model.eval()
        self.split = split
        device = next(model.parameters()).device
        self.predictions = predict_logits(model, split, device).argmax(dim=1)
        self.uploaded: torch.Tensor | None = None
        depth, heads = model.config.depth, model.config.heads

        self.class_filter = w.Dropdown(options=["all classes", *CLASSES], description="class")
        self.outcome_filter = w.Dropdown(options=["all", "correct", "wrong"], description="prediction")
        self.index = w.IntSlider(min=0, max=0, description="image", continuous_update=False)
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="your image")
        self.layer = w.Dropdown(
            options=[(str(i + 1), i) for i in range(depth)] + [(ROLLOUT, ROLLOUT)], value=depth - 1, description="layer"
        )
        self.head = w.Dropdown(options=[("mean", None)] + [(str(h + 1), h) for h in range(heads)], description="head")
        self.amplify = w.FloatSlider(
            value=2.0, min=0.5, max=5.0, step=0.25, description="amplify", continuous_update=False
        )
        self.opacity = w.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False
        )
        self.cmap = w.Dropdown(options=COLORMAPS, description="colormap")
        self.caption = w.HTML()
        self.view = w.Image(format="png")
        self.prediction = w.HTML()

        for control in (self.class_filter, self.outcome_filter):
            control.observe(self._refilter, names="value")
        self.index.observe(self._pick_from_split, names="value")
        self.upload.observe(self._pick_upload, names="value")
        for control in (self.layer, self.head, self.amplify, self.opacity, self.cmap):
            control.observe(self._redraw, names="value")
        self.widget = w.VBox(
            [
                w.HBox([self.class_filter, self.outcome_filter]),
                w.HBox([self.index, self.upload]),
                w.HBox([self.layer, self.head, self.cmap]),
                w.HBox([self.amplify, self.opacity]),
                self.caption,
                w.HBox([self.view, self.prediction]),
            ]
        )
        self._refilter()

    def candidates(self) -> list[int]:
        """Indices into the split that pass the class and prediction filters."""
        labels = self.split.labels.cpu()
        keep = torch.ones_like(labels, dtype=torch.bool)
        if self.class_filter.value != "all classes":
            keep &= labels == CLASSES.index(self.class_filter.value)
        if self.outcome_filter.value != "all":
            correct = self.predictions == labels
            keep &= correct if self.outcome_filter.value == "correct" else ~correct
        return torch.nonzero(keep).flatten().tolist()

    def _refilter(self, _change=None) -> None:
        self._candidates = self.candidates()
        self.index.max = max(len(self._candidates) - 1, 0)
        self.index.value = min(self.index.value, self.index.max)
        self._pick_from_split()

    def _pick_from_split(self, _change=None) -> None:
        self.uploaded = None
        self._select()

    def _pick_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        upload = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
        try:
            self.uploaded = load_image(bytes(upload["content"]), self.model.config.image_size)
        except ImageError:
            self.caption.value = "<b>That file is not an image Pillow can read; upload a PNG or JPEG.</b>"
            return
        self._select()

    def _select(self) -> None:
        if self.uploaded is not None:
            self.image, truth = self.uploaded, "your image"
        elif not self._candidates:
            self.caption.value = "<b>No test image matches these filters.</b>"
            return
        else:
            position = self._candidates[self.index.value]
            self.image = self.split.images[position].float() / 255
            truth = f"test image {position}, {with_article(CLASSES[self.split.labels[position]])}"
        self.probabilities, self.maps = attention_maps(self.model, self.image[None])
        self.caption.value = f"{truth} ({len(self._candidates)} images match the filters)"
        self.prediction.value = _prediction_html(self.probabilities[0])
        self._redraw()

    @property
    def current_grid(self) -> torch.Tensor:
        """The (g, g) map the controls select."""
        layer = self.maps.shape[1] - 1 if self.layer.value == ROLLOUT else self.layer.value
        head = 0 if self.head.value is None else self.head.value + 1
        return self.maps[0, layer, head]

    def _redraw(self, _change=None) -> None:
        grid = self.current_grid
        panels = [
            self.image,
            attention_overlay(self.image, grid, self.amplify.value),
            blend(self.image, grid, opacity=self.opacity.value, cmap=self.cmap.value),
        ]
        row = torch.cat(
            [torch.nn.functional.interpolate(p[None], scale_factor=6, mode="nearest")[0] for p in panels], dim=2
        )
        self.view.value = _png(row)


def with_article(noun: str) -> str:
    """'a cat', 'an airplane'."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _prediction_html(probabilities: torch.Tensor) -> str:
    values, indices = probabilities.topk(5)
    rows = "".join(
        f"<tr><td>{CLASSES[i]}</td><td><div style='background:#4c72b0;height:10px;width:{120 * v:.0f}px'></div>"
        f"</td><td>{v:.1%}</td></tr>"
        for v, i in zip(values.tolist(), indices.tolist())
    )
    return f"<table><tr><th colspan=3>top-5 prediction</th></tr>{rows}</table>"


def explorer_data(model: ViT, split: Split, indices: list[int]) -> dict:
    """Everything the static explorer shows, as JSON-ready data."""
    images = split.images[indices].float() / 255
    probabilities, maps = attention_maps(model, images)
    depth, heads = model.config.depth, model.config.heads
    return {
        "classes": list(CLASSES),
        "layers": [str(i + 1) for i in range(depth)] + [ROLLOUT],
        "heads": ["mean"] + [str(h + 1) for h in range(heads)],
        "grid": model.config.grid_size,
        "colormaps": {name: (colormap_lut(name) * 255).round().int().tolist() for name in COLORMAPS},
        "images": [
            {
                "index": index,
                "label": int(split.labels[index]),
                "png": base64.b64encode(_png(image)).decode(),
                "top5": [[int(i), round(float(p), 4)] for p, i in zip(*probabilities[k].topk(5))],
                "maps": [[[float(f"{v:.6g}") for v in head.flatten().tolist()] for head in layer] for layer in maps[k]],
            }
            for k, (index, image) in enumerate(zip(indices, images))
        ],
    }


def static_explorer_html(
    model: ViT,
    split: Split,
    *,
    per_class: int = 10,
    seed: int = 0,
    indices: list[int] | None = None,
    weights_url: str | None = None,
    start_layer: int | None = None,
    start_image: int | None = None,
) -> str:
    """A self-contained HTML fragment (inline data, CSS and JavaScript; no network) exploring precomputed maps.

    With `weights_url` (where `vit_tutorial.browser.write_browser_weights` put the model's weights script,
    relative to the page), the explorer also classifies the reader's own image in the browser with the
    JavaScript port of the model. `start_layer` (0-based) is the layer it opens on, default the last;
    `start_image` the image, as a position among the explorer's images, default the first.
    """
    indices = indices if indices is not None else select_examples(split.labels, per_class, seed)
    data = explorer_data(model, split, indices)
    if start_layer is not None:
        if not 0 <= start_layer < model.config.depth:
            raise ValueError(f"start_layer must be in [0, {model.config.depth - 1}], got {start_layer}")
        data["start_layer"] = start_layer
    if start_image is not None:
        if not 0 <= start_image < len(indices):
            raise ValueError(
                f"start_image must be in [0, {len(indices) - 1}] (a position among the images), got {start_image}"
            )
        data["start_image"] = start_image
    assets = resources.files("vit_tutorial").joinpath("explorer_assets")
    script = assets.joinpath("explorer.js").read_text()
    if weights_url is not None:
        from .browser import weights_digest

        data["model"] = {"url": weights_url, "digest": weights_digest(model)}
        script = assets.joinpath("vit.js").read_text() + "\n" + script
    style = assets.joinpath("explorer.css").read_text()
    root = f"vit-explorer-{uuid.uuid4().hex[:8]}"
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (
        f'<div id="{root}" class="vit-explorer"><style>{style}</style>'
        f'<script type="application/json" class="vit-explorer-data">{payload}</script>'
        f"<script>{script}\nvitExplorer(document.getElementById({json.dumps(root)}));</script></div>"
    )


class StaticExplorer:
    """Displays the static explorer in Jupyter (its HTML is the cell's output)."""

    def __init__(self, html: str) -> None:
        self.html = html

    def _repr_html_(self) -> str:
        return self.html
