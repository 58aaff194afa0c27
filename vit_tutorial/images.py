"""Reading image files: the one place a file (or uploaded bytes) becomes an 8-bit RGB picture.

Every way an image can be unreadable (not an image, truncated, a decompression bomb) becomes one
`ImageError`, and modes that a plain `convert("RGB")` would get wrong are converted by their range:
16-bit and 32-bit integer greyscale is scaled down (Pillow would clip it to white), float greyscale is
read as [0, 1] or [0, 255], transparent pixels are laid on white, and a photo is turned upright as its
EXIF orientation says.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import ImageError, shown

HIGH_BIT_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def read_rgb(source: str | os.PathLike | bytes, name: str | None = None):
    """Open a file path (or the bytes of an uploaded file) as an RGB PIL image.

    Raises:
        ImageError: one line naming the file, when it is missing or not an image Pillow can read safely.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    opened: io.BytesIO | Path
    if isinstance(source, bytes):
        name, opened = name or "the uploaded file", io.BytesIO(source)
    else:
        path = Path(source)
        name = name or shown(path)
        if not path.is_file():
            raise ImageError(name, _not_a_file(path), "give the path of a PNG, JPEG or other image")
        opened = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # large but allowed: not worth a warning
            with Image.open(opened) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)  # a phone photo stored sideways, with its turn in EXIF
                return as_rgb(upright if upright is not None else image)
    except Image.DecompressionBombError:
        problem = f"is too large to open safely (over {Image.MAX_IMAGE_PIXELS:,} pixels)"
        raise ImageError(name, problem, "give a smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(
            name, f"is not a readable image ({type(error).__name__})", "give a PNG, JPEG or other image file"
        ) from None


def _not_a_file(path: Path) -> str:
    """What is at `path` instead of a file, in words."""
    if path.is_dir():
        return "is a folder, not an image"
    if path.exists():
        return "is not a regular file (a pipe, socket or device)"
    if path.is_symlink():
        return "is a broken symbolic link (or a loop of links)"
    return "is not there (no image file at that path)"


def as_rgb(image):
    """Any PIL image -> 8-bit RGB, keeping the brightness that high-bit-depth modes mean."""
    from PIL import Image

    if image.mode in HIGH_BIT_DEPTH:
        values = np.asarray(image, dtype=np.float64)
        if image.mode != "F":
            # Pillow holds 16-bit samples in 32-bit "I" images too: values beyond 16 bits mean a 32-bit image,
            # whose samples are signed (Pillow's "I"), so white is 2**31 - 1
            full = values.size and np.nanmax(values) > 65535
            scale = 255.0 / (2.0**31 - 1 if full else 65535.0)
        elif values.size and np.nanmax(values) <= 1.0:
            scale = 255.0  # floats in [0, 1]
        else:
            scale = 1.0
        grey = np.clip(np.nan_to_num(values * scale), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:  # alpha, or a colour key (tRNS)
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")
