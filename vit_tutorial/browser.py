"""The trained ViT for the reader's browser: its weights as a script the static explorer loads on demand.

`explorer_assets/vit.js` is a plain JavaScript port of `vit_tutorial.model`; this module writes the
weights it runs, as float16 (half the size; the test-set accuracy is checked to hold), inside a small
script that sets `window.vitTutorialWeights`. A script rather than a binary file, because a page opened
from `file://` may load scripts but not fetch files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from .files import write_text
from .model import ViT

WEIGHTS_SCRIPT = "vit-weights.js"


def half_precision(model: ViT) -> ViT:
    """A copy of `model` whose weights are rounded to float16 and back: exactly what the browser computes with."""
    copy = ViT(model.config)
    copy.load_state_dict({k: v.detach().cpu().half().float() for k, v in model.state_dict().items()})
    return copy.eval()


def _float16_blob(model: ViT) -> tuple[list[list[Any]], bytes]:
    """Every tensor of the state dict as float16, end to end, and [name, shape, offset in halves] for each."""
    tensors, chunks, offset = [], [], 0
    for name, value in model.state_dict().items():
        half = value.detach().cpu().contiguous().half()
        tensors.append([name, list(value.shape), offset])
        chunks.append(half.view(torch.uint8).reshape(-1).numpy().tobytes())
        offset += half.numel()
    return tensors, b"".join(chunks)


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:16]


def weights_digest(model: ViT) -> str:
    """What identifies the browser's weights: the first 16 hex digits of the float16 blob's SHA-256."""
    return _digest(_float16_blob(model)[1])


def browser_payload(model: ViT) -> dict[str, Any]:
    """The config, a digest, and every tensor of the state dict as float16 in one base64 blob, with
    [name, shape, offset in halves] for each."""
    tensors, blob = _float16_blob(model)
    return {
        "config": model.config.to_dict(),
        "dtype": "float16",
        "digest": _digest(blob),
        "tensors": tensors,
        "data": base64.b64encode(blob).decode("ascii"),
    }


def write_browser_weights(model: ViT, path: str | os.PathLike) -> Path:
    """Write the weights script (about 6.4 MB for the book's model) to `path`.

    Raises:
        TypeError: `model` is not the book's ViT, the one model `vit.js` runs.
    """
    if not isinstance(model, ViT):
        raise TypeError(f"the browser runs the book's ViT (vit_tutorial.model.ViT), not a {type(model).__name__}")
    payload = json.dumps(browser_payload(model), separators=(",", ":"))
    return write_text(
        path,
        f"// The book's ViT for vit.js, written by vit_tutorial.browser.\nwindow.vitTutorialWeights = {payload};\n",
    )
