"""Writing result files (histories, metrics, sweep tables) atomically, with one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import VitTutorialError


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file: an interruption leaves the old file or none, never half.

    Raises:
        VitTutorialError: the file cannot be written (a folder in the way, no permission, a full disk).
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text)
        os.replace(partial, path)
    except OSError as error:
        raise VitTutorialError(
            f"cannot write {path} ({error.strerror or error}); choose another location or free some space"
        ) from None
    finally:
        with contextlib.suppress(OSError):  # nothing there, or no folder to look in
            partial.unlink(missing_ok=True)
    return path


def write_json(path: str | os.PathLike, value: Any) -> Path:
    return write_text(path, json.dumps(value, indent=2) + "\n")
