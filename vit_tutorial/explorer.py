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
import functools
import io
import json
import uuid
from importlib import resources

import torch
from torch import nn

from .attention_maps import (
    attend,
    attention_overlay,
    attention_rollout,
    cls_attention,
    cls_spread,
    flat_threshold,
    overlay_steps,
)
from .data import CLASSES, Split
from .errors import ImageError, require_int
from .evaluate import predict_logits
from .model import ViT
from .predict import load_image

COLORMAPS = ("inferno", "viridis", "magma", "jet", "gray")
ROLLOUT = "rollout"


def colormap_lut(name: str) -> torch.Tensor:
    """A matplotlib colormap as a (256, 3) table of RGB values in [0, 1]."""
    import matplotlib

    return torch.tensor(matplotlib.colormaps[name](torch.linspace(0, 1, 256).numpy())[:, :3], dtype=torch.float32)


def blend(
    image: torch.Tensor, grid: torch.Tensor, *, opacity: float = 0.5, cmap: str = "inferno", scale=None
) -> torch.Tensor:
    """The attention map (resized, then min-max normalised or on a shared `scale`, see
    `attention.overlay_steps`) in a colormap, laid over the image: (3, H, W) in [0, 1]."""
    normalised = overlay_steps(image, grid, scale=scale)["normalised"]  # (H, W)
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
    require_int("per_class", per_class)
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


def image_drop(limit_mb: int = 50, side: int = 256):
    """The live explorer's upload control: an anywidget whose JavaScript (`explorer_assets/image_drop.js`)
    checks the file's size, scales the image down in the browser and sends a small PNG, so that no photo
    meets Jupyter's message limit. Its `count` goes up with every image; `png`, `name` and `error` say what
    came."""
    return _image_drop_class()(limit_mb=limit_mb, side=side)


@functools.cache
def _image_drop_class():
    import anywidget
    import traitlets

    class ImageDrop(anywidget.AnyWidget):
        _esm = resources.files("vit_tutorial").joinpath("explorer_assets").joinpath("image_drop.js").read_text()
        png = traitlets.Bytes(b"").tag(sync=True)
        name = traitlets.Unicode("").tag(sync=True)
        error = traitlets.Unicode("").tag(sync=True)
        count = traitlets.Int(0).tag(sync=True)
        limit_mb = traitlets.Int(50).tag(sync=True)
        side = traitlets.Int(256).tag(sync=True)

    return ImageDrop


MEAN_HEAD = -1  # the head control's value for the mean over heads
SCALES = (("min-max (classic)", "minmax"), ("shared by all maps", "shared"))


class AttentionExplorer:
    """The live explorer. `explorer.widget` is the ipywidget to display.

    Args:
        model: a ViT (for example `vit_tutorial.load_pretrained()`).
        split: test images to browse; predictions for all of them are computed once, for filtering.
    """

    PANEL = 192  # pixels a side of each picture

    def __init__(self, model: ViT, split: Split) -> None:
        import ipywidgets as w

        self.model = model.eval()
        self.split = split
        device = next(model.parameters()).device
        self.predictions = predict_logits(model, split, device).argmax(dim=1)
        self.uploaded: torch.Tensor | None = None
        self.upload_name = ""
        depth, heads = model.config.depth, model.config.heads
        self.flat = flat_threshold(model.config.num_tokens)

        self.class_filter = w.Dropdown(options=["all classes", *CLASSES], description="class")
        self.outcome_filter = w.Dropdown(options=["all", "correct", "wrong"], description="prediction")
        self.index = w.IntSlider(min=0, max=0, description="image", continuous_update=False)
        self.upload = image_drop()
        self.layer = w.Dropdown(
            options=[(str(i + 1), i) for i in range(depth)] + [(ROLLOUT, ROLLOUT)], value=depth - 1, description="layer"
        )
        self.head = w.Dropdown(
            options=[("mean", MEAN_HEAD)] + [(str(h + 1), h) for h in range(heads)], value=MEAN_HEAD, description="head"
        )
        self.scale = w.Dropdown(options=SCALES, value="minmax", description="scale")
        self.amplify = w.FloatSlider(
            value=2.0, min=0.5, max=5.0, step=0.25, description="amplify", continuous_update=False
        )
        self.opacity = w.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False
        )
        self.cmap = w.Dropdown(options=COLORMAPS, description="colormap")
        self.caption = w.HTML()
        self.views = [w.Image(format="png", width=self.PANEL, height=self.PANEL) for _ in range(3)]
        self.titles = [w.HTML(), w.HTML(), w.HTML()]
        self.colorbar = w.Image(format="png", width=self.PANEL, height=10)
        self.scale_text = w.HTML()
        self.prediction = w.HTML()

        for control in (self.class_filter, self.outcome_filter):
            control.observe(self._refilter, names="value")
        self.index.observe(self._pick_from_split, names="value")
        self.upload.observe(self._pick_upload, names=["count", "error"])
        for control in (self.layer, self.head, self.scale, self.amplify, self.opacity, self.cmap):
            control.observe(self._redraw, names="value")
        panels = [w.VBox([view, title]) for view, title in zip(self.views, self.titles)]
        panels[2].children = (*panels[2].children, self.colorbar, self.scale_text)
        self.widget = w.VBox(
            [
                w.HBox([self.class_filter, self.outcome_filter]),
                w.HBox([self.index]),
                w.HBox([w.HTML("<b>your image</b>"), self.upload]),
                w.HBox([self.layer, self.head, self.scale]),
                w.HBox([self.amplify, self.opacity, self.cmap]),
                self.caption,
                w.HBox([*panels, self.prediction]),
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
        if self.upload.error:
            self._show_problem(self.upload.error)
            return
        try:
            self.uploaded = load_image(bytes(self.upload.png), self.model.config.image_size)
        except ImageError:
            self._show_problem(f"{self.upload.name} is not an image Pillow can read; upload a PNG or JPEG")
            return
        self.upload_name = f"{self.upload.count}: {self.upload.name}"
        self._select()

    def _show_problem(self, message: str) -> None:
        """An upload that failed: say why, and show no picture that could be taken for its."""
        self.uploaded = None
        self.caption.value = f"<b style='color:#b00020'>{html_escape(message)}</b>"
        for view in (*self.views, self.colorbar):
            view.value = b""
        self.prediction.value = self.scale_text.value = ""

    def _select(self) -> None:
        if self.uploaded is not None:
            self.image, truth = self.uploaded, f"your image {html_escape(self.upload_name)}"
        elif not self._candidates:
            self._show_problem("No test image matches these filters.")
            return
        else:
            position = self._candidates[self.index.value]
            self.image = self.split.images[position].float() / 255
            truth = f"test image {position}, {with_article(CLASSES[self.split.labels[position]])}"
            truth += f" ({len(self._candidates)} images match the filters)"
        self.probabilities, self.maps = attention_maps(self.model, self.image[None])
        # one scale for all of the image's layer maps (its largest patch weight); the rollout has its own
        self.shared = {False: self.maps[0, :-1].amax(), True: self.maps[0, -1, 0].amax()}
        self.caption.value = truth
        self.prediction.value = _prediction_html(self.probabilities[0])
        self._redraw()

    @property
    def rollout(self) -> bool:
        return self.layer.value == ROLLOUT

    @property
    def current_grid(self) -> torch.Tensor:
        """The (y, x) map the controls select."""
        layer = self.maps.shape[1] - 1 if self.rollout else self.layer.value
        head = 0 if self.rollout or self.head.value == MEAN_HEAD else self.head.value + 1
        return self.maps[0, layer, head]

    def _redraw(self, _change=None) -> None:
        self.head.disabled = self.rollout  # rollout fuses the heads: there is no head to choose
        grid = self.current_grid
        shared = self.scale.value == "shared"
        scale = self.shared[self.rollout] if shared else None
        pictures = [
            self.image,
            attention_overlay(self.image, grid, self.amplify.value, scale=scale),
            blend(self.image, grid, opacity=self.opacity.value, cmap=self.cmap.value, scale=scale),
        ]
        for view, picture in zip(self.views, pictures):
            view.value = _png(torch.nn.functional.interpolate(picture[None], scale_factor=6, mode="nearest")[0])
        low, high = grid.min().item(), grid.max().item()
        flat = not self.rollout and high - low < self.flat
        where = ROLLOUT if self.rollout else f"layer {self.layer.value + 1}"
        overlay = "overlay, shared scale" if shared else "classic overlay (min-max)"
        self.titles[0].value = "<center>image</center>"
        self.titles[1].value = f"<center>{overlay}{' <b>(flat)</b>' if flat else ''}</center>"
        self.titles[2].value = f"<center>{where} in {self.cmap.value}</center>"
        self.colorbar.value = _png(colormap_lut(self.cmap.value).T[:, None, :].expand(3, 10, 256).contiguous())
        top = f"0 to {scale:.3f} (shared)" if shared else f"{low:.3f} to {high:.3f} (min-max)"
        note = (
            f"<br><b>flat</b>: the spread is below {self.flat:.4f}, a tenth of an even share; "
            + ("the shared scale shows it even" if shared else "min-max stretches noise to full contrast")
            if flat
            else ""
        )
        self.scale_text.value = (
            f"<small>raw weight {low:.3f} to {high:.3f}, spread {high - low:.4f}; colour scale {top}{note}</small>"
        )


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


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
        "flat_threshold": flat_threshold(model.config.num_tokens),
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
    inline_weights: bool = False,
    start_layer: int | None = None,
    start_image: int | None = None,
) -> str:
    """A self-contained HTML fragment (inline data, CSS and JavaScript; no network) exploring precomputed maps.

    With `weights_url` (where `vit_tutorial.browser.write_browser_weights` put the model's weights script,
    relative to the page) or `inline_weights` (the weights in the fragment itself, 6.4 MB, for a running
    notebook, where no such file is served), the explorer also classifies the reader's own image in the
    browser with the JavaScript port of the model. `start_layer` (0-based) is the layer it opens on,
    default the last; `start_image` the image, as a position among the explorer's images, default the first.
    """
    indices = indices if indices is not None else select_examples(split.labels, per_class, seed)
    for index in indices:
        require_int("every index", index, low=0, high=len(split) - 1)
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
    weights = ""
    if weights_url is not None or inline_weights:
        from .browser import browser_payload, weights_digest

        data["model"] = {"url": weights_url, "digest": weights_digest(model)}
        script = assets.joinpath("vit.js").read_text() + "\n" + script
        if inline_weights:
            carried = json_in_html(browser_payload(model))
            weights = f"<script>window.vitTutorialWeights = window.vitTutorialWeights || {carried};</script>"
    style = assets.joinpath("explorer.css").read_text()
    root = f"vit-explorer-{uuid.uuid4().hex[:8]}"
    payload = json_in_html(data)
    return (
        f'<div id="{root}" class="vit-explorer"><style>{style}</style>'
        f'<script type="application/json" class="vit-explorer-data">{payload}</script>{weights}'
        f"<script>{script}\nvitExplorer(document.getElementById({json_in_html(root)}));</script></div>"
    )


def json_in_html(value: object) -> str:
    """`value` as JSON that is safe inside an HTML <script> element: every <, > and & written as a JSON escape,
    so that no string in it (a URL given by the page's author, say) can close the element or open a comment."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class StaticExplorer:
    """Displays the static explorer in Jupyter (its HTML is the cell's output)."""

    def __init__(self, html: str) -> None:
        self.html = html

    def _repr_html_(self) -> str:
        return self.html
