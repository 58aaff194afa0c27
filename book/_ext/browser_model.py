"""Write the shipped model's weights for the in-browser explorer into the built book.

Chapter 9's static explorer classifies the reader's own image with a JavaScript port of the model
(`vit_tutorial/explorer_assets/vit.js`). Its weights are not committed: at every HTML build they are
written from the checkpoint the package ships, to `_static/vit-weights.js`, where the explorer's
`weights_url` points. If the package ships no checkpoint, nothing is written and the explorer says the
in-browser model is not available.
"""

from pathlib import Path

from sphinx.util import logging


def _write_weights(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    from vit_tutorial.browser import WEIGHTS_SCRIPT, write_browser_weights
    from vit_tutorial.pretrained import load_pretrained, pretrained_available

    if pretrained_available():
        path = write_browser_weights(load_pretrained(), Path(app.outdir) / "_static" / WEIGHTS_SCRIPT)
        logging.getLogger(__name__).info(f"browser model: wrote {path.name} ({path.stat().st_size:,} bytes)")


def setup(app):
    app.connect("build-finished", _write_weights)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
