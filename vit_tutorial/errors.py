"""The one exception type the package raises for bad input.

Every message is a single line that says what was expected, what came, and what to do,
so the command line can print it as it is.
"""

from __future__ import annotations

import pickle
import zipfile

# What torch.load raises for a missing, truncated or corrupt file.
UNREADABLE_FILE_ERRORS = (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError)


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of an error's message (at most `limit` characters), or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


class VitTutorialError(Exception):
    """Bad input a user can fix: missing data, a corrupt checkpoint, an unreadable image."""


class DataNotFoundError(VitTutorialError, FileNotFoundError):
    """CIFAR-10 is neither at the data root nor downloadable."""


class CheckpointError(VitTutorialError):
    """A checkpoint is missing, truncated, corrupt, or written for another model."""


class ImageError(VitTutorialError):
    """A file given for prediction is not a readable image."""


class TrainingDivergedError(VitTutorialError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class WeightsUnavailableError(VitTutorialError):
    """Pretrained weights are neither in the local cache nor downloadable (no network)."""
