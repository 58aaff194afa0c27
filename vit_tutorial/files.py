"""Writing files atomically (checkpoints, histories, metrics, caches, sweep tables), with one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import VitTutorialError, first_line


def write_atomically(
    path: str | os.PathLike,
    write: Callable[[IO[bytes]], None],
    *,
    error: type[VitTutorialError] = VitTutorialError,
    advice: str = "choose another location or free some space",
) -> Path:
    """Call `write` on a temporary file beside `path`, flush it to disk, then move it into place: a crash or
    Ctrl-C leaves the old file (or none), never half a file, and no temporary file behind.

    Raises:
        `error`: one line, when the file cannot be written (a folder in the way, no permission, a full disk).
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except OSError as problem:
        raise error(f"cannot write {path} ({problem.strerror or first_line(problem)}); {advice}") from None
    finally:
        with contextlib.suppress(OSError):  # nothing there, or no folder to look in
            partial.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_atomically(path, lambda handle: handle.write(text.encode()))


def write_json(path: str | os.PathLike, value: Any) -> Path:
    return write_text(path, json.dumps(value, indent=2) + "\n")
