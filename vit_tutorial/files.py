"""Writing files atomically (checkpoints, histories, metrics, caches, sweep tables), with one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import VitTutorialError, first_line, shown


def write_atomically(
    path: str | os.PathLike,
    write: Callable[[IO[bytes]], object],
    *,
    error: type[VitTutorialError] = VitTutorialError,
    advice: str = "choose another location or free some space",
) -> Path:
    """Call `write` on a temporary file beside `path`, flush it to disk, then move it into place: a crash or
    Ctrl-C leaves the old file (or none), never half a file, and no temporary file behind. Each writer has a
    temporary file of its own, so two writers of one path never write into the same file.

    Raises:
        `error`: one line, when the file cannot be written, whatever the writer raised for it: a folder in
            the way, no permission, a full disk, a file-size limit (`torch.save` reports the last two as a
            RuntimeError).
    """
    path = Path(path)
    partial = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, before the move)
            dir=path.parent, prefix=f".{path.name}.", suffix=".partial", delete=False
        )
        partial = Path(handle.name)
        os.chmod(partial, 0o666 & ~_umask())  # as a plain open() would make it, not the temporary file's 0600
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        partial = None
    except Exception as problem:  # noqa: BLE001 (every failed write becomes the one line below)
        reason = problem.strerror if isinstance(problem, OSError) and problem.strerror else first_line(problem, 160)
        raise error(f"cannot write {shown(path)} ({reason}); {advice}") from None
    finally:
        if partial is not None:
            with contextlib.suppress(OSError):  # nothing there, or no folder to look in
                partial.unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_atomically(path, lambda handle: handle.write(text.encode()))


def write_json(path: str | os.PathLike, value: Any) -> Path:
    return write_text(path, json.dumps(value, indent=2) + "\n")
