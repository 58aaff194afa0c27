"""The exceptions the package raises for bad input, and how a failure becomes one line.

Every message is a single line that says what was expected, what came, and what to do,
so the command line can print it as it is.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile

# What torch.load raises for a missing, truncated or corrupt file.
UNREADABLE_FILE_ERRORS = (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # terminal colour codes, which some libraries put in messages
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of an error's message (at most `limit` characters) without terminal colour codes, or its type
    when it has none. A file torch refuses to unpickle is described in our words, not torch's (which suggest
    loading it unsafely)."""
    if isinstance(error, pickle.UnpicklingError):
        return "it holds Python objects besides tensors and plain data, which are not loaded: they could run code"
    text = ANSI.sub("", str(error)).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def shown(path: str | os.PathLike) -> str:
    """A path as it can be printed and stored on one line: bytes that are not UTF-8 (a file name from another
    system) and control characters (a newline in a name) become backslash escapes instead of failing the print
    or splitting the line."""
    text = os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def option(name: str, value: object = None) -> str:
    """An option as a message names it for both audiences: the command line's flag, and the argument or field
    name a notebook passes (`option("init_from")` is "--init-from (init_from)", `option("epochs", 4)` is
    "--epochs 4 (epochs=4)")."""
    flag = f"--{name.replace('_', '-')}"
    return f"{flag} ({name})" if value is None else f"{flag} {value} ({name}={value})"


def require_int(name: str, value: object, low: int = 1, high: int | None = None) -> int:
    """`value` if it is a whole number in [low, high] (a bool is not a number here).

    Raises:
        TypeError: not a whole number. ValueError: outside the range. Both name the parameter.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        upper = f" and at most {high}" if high is not None else ""
        raise ValueError(f"{name} must be at least {low}{upper}, got {value}")
    return value


def require_number(name: str, value: object, low: float | None = None, high: float | None = None) -> float:
    """`value` if it is a finite real number in [low, high].

    Raises:
        TypeError: not a number. ValueError: NaN, infinite, or outside the range. Both name the parameter.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return float(value)


class VitTutorialError(Exception):
    """Bad input a user can fix: missing data, a corrupt checkpoint, an unreadable image."""


class DataNotFoundError(VitTutorialError, FileNotFoundError):
    """CIFAR-10 is neither at the data root nor downloadable."""


class DataError(VitTutorialError):
    """The data set is there but not laid out as expected (a stray folder, an empty class, a wrong size)."""


class CheckpointError(VitTutorialError):
    """A checkpoint is missing, truncated, corrupt, or written for another model."""


class ImageError(VitTutorialError):
    """A file given for prediction (or in an image folder) is not a readable image.

    `problem` says what is wrong with the file without naming it or giving advice, for callers that
    name the file and advise in their own words."""

    def __init__(self, name: str, problem: str, advice: str) -> None:
        super().__init__(f"{name} {problem}; {advice}")
        self.problem = problem


class TrainingDivergedError(VitTutorialError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class WeightsUnavailableError(VitTutorialError):
    """Pretrained weights are neither in the local cache nor downloadable (no network)."""


class RunInUseError(VitTutorialError):
    """Another process is writing to the same run folder."""


class Interrupted(VitTutorialError):
    """Ctrl-C, SIGTERM or SIGHUP ended the command; `exit_code` is 130, 143 or 129, as a shell reports them."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
