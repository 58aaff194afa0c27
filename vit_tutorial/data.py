"""CIFAR-10 as uint8 tensors: train / validation / test, from torchvision or an image folder.

The whole data set is 180 MB as uint8, so it is held in memory (on the GPU when there is one) and
batched by indexing, with augmentation done on the batch (see `augment`). The validation split is
held out of the 50,000 training images with a seed; the test set is only for the final evaluation.

Sources, tried in this order under the data root:
  1. an image folder: `train/<class>/*` and `test/<class>/*` (a JPEG copy, for instance),
     decoded once into a cached `.npz` file per split so later loads take about a second; the cache is
     keyed on every file's name, size and modification time, so an edited image is read again;
  2. torchvision's pickled original in `cifar-10-batches-py/`, downloaded when asked for or when no data
     root was configured at all (a fresh machine).

Every load records its provenance: the source, the root, and a fingerprint of the decoded pixels and labels,
so that a resumed run or a re-scored model can check it is looking at the same data.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import (
    UNREADABLE_FILE_ERRORS,
    DataError,
    DataNotFoundError,
    ImageError,
    VitTutorialError,
    first_line,
    require_int,
    shown,
)
from .files import write_atomically
from .images import read_rgb

CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DATA_ENV = "VIT_TUTORIAL_DATA"
TRAIN_IMAGES = 50_000  # in CIFAR-10's training set, of which `val_size` are held out
CACHE_ENV = "VIT_TUTORIAL_CACHE"


def cache_dir() -> Path:
    """Where decoded arrays go: `VIT_TUTORIAL_CACHE`, else `$XDG_CACHE_HOME/vit_tutorial` or `~/.cache/vit_tutorial`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "vit_tutorial"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else `VIT_TUTORIAL_DATA`, else `<cache_dir>/data`."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return cache_dir() / "data"


@dataclass
class Split:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one split."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"Split.images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"Split.labels must be shaped ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        if self.labels.dtype != torch.long:
            raise TypeError(f"Split.labels must be class indices (torch.long), got {self.labels.dtype}")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(CLASSES)):
            raise ValueError(
                f"Split.labels must be class indices 0..{len(CLASSES) - 1}, got values from "
                f"{int(self.labels.min())} to {int(self.labels.max())}"
            )

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def subset(self, n: int, seed: int = 0) -> Split:
        """A random sample of at most `n` images, the same for the same seed."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"a subset is a whole number of images >= 0, got {n!r}")
        if n >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(self), generator=generator)[:n].to(self.labels.device)
        return Split(self.images[keep], self.labels[keep])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels.cpu(), minlength=len(CLASSES)).tolist()


@dataclass
class CIFAR10:
    """The three splits and a record of where they came from."""

    train: Split
    val: Split
    test: Split
    provenance: dict = field(default_factory=dict)

    def subset(self, train: int, val: int, test: int, seed: int = 0) -> CIFAR10:
        """Smaller random splits, for quick runs; the provenance says so, with the sizes actually drawn."""
        parts = self.train.subset(train, seed), self.val.subset(val, seed), self.test.subset(test, seed)
        sizes = dict(zip(("train", "val", "test"), (len(part) for part in parts)))
        return CIFAR10(*parts, {**self.provenance, "subset": {**sizes, "seed": seed}})


def load_cifar10(
    root: str | os.PathLike | None = None,
    *,
    val_size: int = 5000,
    seed: int = 0,
    download: bool | None = None,
    test_only: bool = False,
) -> CIFAR10:
    """Load CIFAR-10 and hold out `val_size` training images for validation, chosen with `seed`.

    `download=None` (the default) downloads the original through torchvision into the default data root
    when CIFAR-10 is not found and no root was given (neither `root` nor `VIT_TUTORIAL_DATA`): on a fresh
    machine a notebook gets its data without an edit. `True` downloads into any root, `False` never.
    `test_only` loads the test split alone (train and validation come back empty), for scoring a model.

    Raises:
        DataNotFoundError: with one line saying where to put the data or how to download it.
        DataError: an image folder laid out in a way that would silently give wrong data.
    """
    require_int("val_size", val_size, low=0, high=TRAIN_IMAGES - 1)
    require_int("seed", seed, low=0)
    configured = root is not None or bool(os.environ.get(DATA_ENV))
    root = data_root(root)
    wanted = ("test",) if test_only else ("train", "test")
    if _is_image_folder(root, wanted):
        arrays, provenance = _load_image_folder(root, wanted)
    elif (root / "cifar-10-batches-py").is_dir() or download or (download is None and not configured):
        arrays, provenance = _load_torchvision(root, download is not False, wanted)
    else:
        raise DataNotFoundError(
            f"CIFAR-10 not found under {shown(root)}: put an image-folder copy there (train/<class>/*, "
            f"test/<class>/*) or set {DATA_ENV} to one, or download the original with `--download` (download=True)"
        )
    test = Split(*arrays["test"])
    if test_only:
        empty = Split(torch.empty((0, 3, 32, 32), dtype=torch.uint8), torch.empty(0, dtype=torch.long))
        return CIFAR10(empty, empty, test, provenance)
    train_x, train_y = arrays["train"]
    if not 0 < val_size < len(train_y):
        raise ValueError(f"val_size must be between 1 and {len(train_y) - 1}, got {val_size}")
    order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    provenance.update(val_size=val_size, split_seed=seed)
    return CIFAR10(
        train=Split(train_x[train_idx], train_y[train_idx]),
        val=Split(train_x[val_idx], train_y[val_idx]),
        test=test,
        provenance=provenance,
    )


MIN_SUBSET = 10  # one image per class, and two for validation and test: the least a quick run can report on


def load_data(
    root: str | os.PathLike | None = None,
    *,
    val_size: int = 5000,
    seed: int = 0,
    download: bool | None = None,
    subset: int | None = None,
    test_only: bool = False,
) -> CIFAR10:
    """`load_cifar10`, then, for a quick run, `subset` training images and `subset // 5` validation and test images.

    Raises:
        ValueError: a subset below MIN_SUBSET or above the training split (it would not be a subset).
    """
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int)):
        raise ValueError(f"subset must be a whole number of training images, got {subset!r}")
    if subset is not None and subset < MIN_SUBSET:
        raise ValueError(
            f"subset must be at least {MIN_SUBSET} training images (it sets {MIN_SUBSET // 5} for validation), "
            f"got {subset}"
        )
    data = load_cifar10(root, val_size=val_size, seed=seed, download=download, test_only=test_only)
    if subset is None:
        return data
    if not test_only and subset > len(data.train):
        raise ValueError(
            f"subset {subset} is more than the {len(data.train)} training images; leave --subset out to use them all"
        )
    return data.subset(subset, subset // 5, subset // 5, seed)


def _is_image_folder(root: Path, splits: tuple[str, ...]) -> bool:
    return all((root / split).is_dir() for split in splits)


def _list_image_folder(split_dir: Path) -> list[tuple[Path, int]]:
    """Every image of one split with its label, refusing layouts that would silently give wrong data: a
    missing or extra class folder, an empty class, images in a subfolder, a file where a class folder
    should be."""
    missing = [name for name in CLASSES if not (split_dir / name).is_dir()]
    if missing:
        raise DataNotFoundError(
            f"{shown(split_dir)} lacks class folder(s) {missing}; an image-folder copy needs one folder per "
            "CIFAR-10 class"
        )
    extra = sorted(shown(p.name) for p in split_dir.iterdir() if p.name not in CLASSES and not p.name.startswith("."))
    if extra:
        raise DataError(
            f"{shown(split_dir)} holds {extra}, which are not CIFAR-10 classes ({', '.join(CLASSES)}); "
            "move them out of the data folder"
        )
    files = []
    for label, name in enumerate(CLASSES):
        entries = sorted((p for p in (split_dir / name).iterdir() if not p.name.startswith(".")), key=_sort_key)
        nested = [p for p in entries if p.is_dir() and p.suffix.lower() not in IMAGE_SUFFIXES]
        if nested:
            raise DataError(
                f"{shown(nested[0])} is a folder inside a class folder; images must sit directly in "
                f"{shown(split_dir / name)}: move them up or out"
            )
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise DataError(
                f"{shown(split_dir / name)} holds no images ({', '.join(IMAGE_SUFFIXES)}); every class needs some"
            )
        files += [(path, label) for path in images]
    return files


def _sort_key(path: Path) -> bytes:
    return os.fsencode(path.name)  # names that are not UTF-8 sort, and hash, as the bytes they are


def _listing_key(root: Path, files: list[tuple[Path, int]]) -> str:
    """What the decoded cache is keyed on: every file's name, label, size, inode, and modification and change
    times, so that an image replaced or edited in place is read again. The change time (ctime) is the kernel's:
    a copy that restores the modification time (`cp -p`, `rsync -t`) still changes it."""
    digest = hashlib.sha256()
    for path, label in files:
        try:
            stat = path.stat()
        except OSError:  # a broken link: decoding names it
            stat = path.lstat()
        seen = f"\t{label}\t{stat.st_size}\t{stat.st_ino}\t{stat.st_mtime_ns}\t{stat.st_ctime_ns}\n"
        digest.update(os.fsencode(path.relative_to(root)) + seen.encode())
    return digest.hexdigest()[:16]


def content_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """What identifies a split's data: the SHA-256 of its decoded pixels and labels (first 16 hex digits)."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()[:16]


def _decode(files: list[tuple[Path, int]], split: str) -> tuple[np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm

    images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    bar = tqdm(files, desc=f"decoding {split} images (once)", leave=False, disable=None)  # shown on terminals only
    for i, (path, _) in enumerate(bar):
        try:
            array = np.asarray(read_rgb(path))
        except ImageError as error:
            raise ImageError(shown(path), error.problem, "remove or replace this file in the image folder") from None
        if array.shape != (32, 32, 3):
            raise DataError(
                f"{shown(path)} is {array.shape[1]}x{array.shape[0]}, expected a 32x32 CIFAR-10 image; remove or "
                "replace it"
            )
        images[i] = array
    return images, np.array([label for _, label in files], dtype=np.int64)


def _read_cache(cache: Path, count: int) -> dict[str, np.ndarray]:
    """The decoded arrays of one split, or {} when the cache is missing, unreadable or does not fit: a damaged
    cache is rebuilt, never trusted and never fatal."""
    if not cache.is_file():
        return {}
    try:
        with np.load(cache) as stored:
            arrays = {name: stored[name] for name in ("images", "labels", "fingerprint")}
        images, labels = arrays["images"], arrays["labels"]
        if images.shape != (count, 32, 32, 3) or images.dtype != np.uint8 or labels.shape != (count,):
            return {}
        if content_fingerprint(images, labels) != str(arrays["fingerprint"]):  # edited pixels: decode again
            return {}
        return arrays
    except (*UNREADABLE_FILE_ERRORS, KeyError):
        return {}


def _load_image_folder(root: Path, splits: tuple[str, ...]):
    rootkey = hashlib.sha256(os.fsencode(root.resolve())).hexdigest()[:12]
    arrays, fingerprints, suffixes = {}, {}, set()
    listings = {split: _list_image_folder(root / split) for split in splits}  # every layout check before decoding
    for split, files in listings.items():
        suffixes |= {p.suffix.lower() for p, _ in files}
        cache = cache_dir() / f"cifar10-imagefolder-{rootkey}-{split}-{_listing_key(root, files)}.npz"
        stored = _read_cache(cache, len(files))
        if not stored:
            images, labels = _decode(files, split)
            stored = {"images": images, "labels": labels, "fingerprint": np.array(content_fingerprint(images, labels))}
            _write_cache(cache, stored, stale=f"cifar10-imagefolder-{rootkey}-{split}-*.npz")
        arrays[split] = _to_tensors(stored["images"], stored["labels"])
        fingerprints[split] = str(stored["fingerprint"])
    types = sorted(suffixes)
    provenance = {
        "source": "image-folder",
        "root": shown(root),
        "file_types": types,
        "description": "CIFAR-10, JPEG copy" if types in ([".jpg"], [".jpeg"]) else "CIFAR-10, image folder",
        **_fingerprints(fingerprints),
    }
    return arrays, provenance


def _fingerprints(per_split: dict[str, str]) -> dict[str, str]:
    """`test_fingerprint` always; `fingerprint` (training and test data together) when both were loaded."""
    found = {"test_fingerprint": per_split["test"]}
    if "train" in per_split:
        found["fingerprint"] = hashlib.sha256(f"{per_split['train']}:{per_split['test']}".encode()).hexdigest()[:16]
    return found


def _write_cache(cache: Path, arrays: dict[str, np.ndarray], stale: str) -> None:
    """Write the decoded arrays atomically and remove the caches of earlier versions of the folder; if the cache
    folder cannot be written, go on without a cache."""
    import warnings

    for old in cache.parent.glob(stale) if cache.parent.is_dir() else ():
        old.unlink(missing_ok=True)
    try:
        write_atomically(
            cache,
            lambda handle: np.savez(handle, **arrays),  # type: ignore[arg-type]  # numpy's stub types **kwds oddly
            advice=f"set {CACHE_ENV} to a writable folder",
        )
    except VitTutorialError as error:
        warnings.warn(f"{first_line(error)}; the images will be decoded again next time", stacklevel=3)


def _load_torchvision(root: Path, download: bool, splits: tuple[str, ...]):
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    arrays, fingerprints = {}, {}
    try:
        for split in splits:
            loaded = TorchvisionCIFAR10(str(root), train=split == "train", download=download)
            images, labels = loaded.data, np.asarray(loaded.targets, dtype=np.int64)
            arrays[split], fingerprints[split] = _to_tensors(images, labels), content_fingerprint(images, labels)
    except (OSError, RuntimeError) as error:
        where = "into" if download else "from"
        raise DataNotFoundError(
            f"could not get CIFAR-10 through torchvision {where} {shown(root)} ({first_line(error)}); on a machine "
            f"without internet put an image-folder copy (train/<class>/*, test/<class>/*) or torchvision's "
            f"cifar-10-batches-py/ there, or set {DATA_ENV} to a folder holding one"
        ) from None
    provenance = {
        "source": "torchvision",
        "root": shown(root),
        "description": "CIFAR-10, original (torchvision)",
        **_fingerprints(fingerprints),
    }
    return arrays, provenance


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W, C) uint8 numpy -> (N, C, H, W) uint8 tensor, and int64 labels."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), torch.from_numpy(
        labels.astype(np.int64)
    )


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images (B, 3, H, W) -> float32 standardised with CIFAR10_MEAN / CIFAR10_STD."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(CIFAR10_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalise`: standardised (B, 3, H, W) -> values in [0, 1]."""
    mean = torch.tensor(CIFAR10_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)


def batches(
    split: Split,
    batch_size: int,
    *,
    device: torch.device | str = "cpu",
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    raw: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield batches of images (B, 3, 32, 32) and labels (B,): normalised floats on `device`, or with
    `raw=True` the stored uint8 images where the split is (for `augment.Pipeline` to transform).

    Shuffling draws from `generator`, which must live on the split's device.
    """
    n = len(split)
    if shuffle and generator is None:
        raise ValueError("batches() needs a generator when shuffle is on, so runs are reproducible")
    order = torch.randperm(n, generator=generator, device=split.labels.device) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            images, labels = split.images[start : start + batch_size], split.labels[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            images, labels = split.images[index], split.labels[index]
        if raw:
            yield images, labels
            continue
        yield normalise(images.to(device, non_blocking=True)), labels.to(device, non_blocking=True)
