"""Reading image files: the one place a file (or uploaded bytes) becomes an 8-bit RGB picture.

Every way an image can be unreadable (not an image, truncated, a decompression bomb) becomes one
`ImageError`, and modes that a plain `convert("RGB")` would get wrong are converted by their range:
16-bit and 32-bit integer greyscale is scaled down (Pillow would clip it to white), float greyscale is
read as [0, 1] or [0, 255], and transparent pixels are laid on white.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import ImageError

HIGH_BIT_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def read_rgb(source: str | os.PathLike | bytes, name: str | None = None):
    """Open a file path (or the bytes of an uploaded file) as an RGB PIL image.

    Raises:
        ImageError: one line naming the file, when it is missing or not an image Pillow can read safely.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, bytes):
        name, opened = name or "the uploaded file", io.BytesIO(source)
    else:
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise ImageError(f"no image file at {path}; give the path of a PNG, JPEG or other image")
        opened = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # large but allowed: not worth a warning
            with Image.open(opened) as image:
                image.load()
                return as_rgb(image)
    except Image.DecompressionBombError:
        problem = f"is too large to open safely (over {Image.MAX_IMAGE_PIXELS:,} pixels)"
        raise _unreadable(name, problem, "give a smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise _unreadable(
            name, f"is not a readable image ({type(error).__name__})", "give a PNG, JPEG or other image file"
        ) from None


def _unreadable(name: str, problem: str, advice: str) -> ImageError:
    error = ImageError(f"{name} {problem}; {advice}")
    error.problem = problem  # what went wrong, for callers that give their own advice
    return error


def as_rgb(image):
    """Any PIL image -> 8-bit RGB, keeping the brightness that high-bit-depth modes mean."""
    from PIL import Image

    if image.mode in HIGH_BIT_DEPTH:
        values = np.asarray(image, dtype=np.float64)
        if image.mode != "F":
            scale = 255.0 / 65535.0  # 16-bit samples, also when Pillow holds them in a 32-bit "I" image
        elif values.size and np.nanmax(values) <= 1.0:
            scale = 255.0  # floats in [0, 1]
        else:
            scale = 1.0
        grey = np.clip(np.nan_to_num(values * scale), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")
