"""CIFAR-10 as uint8 tensors: train / validation / test, from torchvision or an image folder.

The whole data set is 180 MB as uint8, so it is held in memory (on the GPU when there is one) and
batched by indexing, with augmentation done on the batch (see `augment`). The validation split is
held out of the 50,000 training images with a seed; the test set is only for the final evaluation.

Sources, tried in this order under the data root:
  1. an image folder: `train/<class>/*` and `test/<class>/*` (a JPEG copy, for instance),
     decoded once into a cached `.npz` file so later loads take about a second;
  2. torchvision's pickled original in `cifar-10-batches-py/`, downloaded if `download=True`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .augment import augment_batch
from .errors import UNREADABLE_FILE_ERRORS, DataNotFoundError, ImageError, VitTutorialError, first_line
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

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def subset(self, n: int, seed: int = 0) -> Split:
        """A random sample of at most `n` images, the same for the same seed."""
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
        """Smaller random splits, for quick runs; the provenance says so."""
        provenance = {**self.provenance, "subset": {"train": train, "val": val, "test": test, "seed": seed}}
        return CIFAR10(
            self.train.subset(train, seed), self.val.subset(val, seed), self.test.subset(test, seed), provenance
        )


def load_cifar10(
    root: str | os.PathLike | None = None, *, val_size: int = 5000, seed: int = 0, download: bool = False
) -> CIFAR10:
    """Load CIFAR-10 and hold out `val_size` training images for validation, chosen with `seed`.

    Raises:
        DataNotFoundError: with one line saying where to put the data or how to download it.
    """
    root = data_root(root)
    if _is_image_folder(root):
        (train_x, train_y), (test_x, test_y), provenance = _load_image_folder(root)
    elif (root / "cifar-10-batches-py").is_dir() or download:
        (train_x, train_y), (test_x, test_y), provenance = _load_torchvision(root, download)
    else:
        raise DataNotFoundError(
            f"CIFAR-10 not found under {root}: put an image-folder copy there (train/<class>/*, test/<class>/*) "
            f"or set {DATA_ENV} to one, or download the original with `--download` (download=True)"
        )
    if not 0 < val_size < len(train_y):
        raise ValueError(f"val_size must be between 1 and {len(train_y) - 1}, got {val_size}")
    order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    provenance.update(val_size=val_size, split_seed=seed)
    return CIFAR10(
        train=Split(train_x[train_idx], train_y[train_idx]),
        val=Split(train_x[val_idx], train_y[val_idx]),
        test=Split(test_x, test_y),
        provenance=provenance,
    )


MIN_SUBSET = 10  # one image per class, and two for validation and test: the least a quick run can report on


def load_data(
    root: str | os.PathLike | None = None,
    *,
    val_size: int = 5000,
    seed: int = 0,
    download: bool = False,
    subset: int | None = None,
) -> CIFAR10:
    """`load_cifar10`, then, for a quick run, `subset` training images and `subset // 5` validation and test images.

    Raises:
        ValueError: a subset below MIN_SUBSET or above the training split (it would not be a subset).
    """
    if subset is not None and not isinstance(subset, int):
        raise ValueError(f"subset must be a whole number of training images, got {subset!r}")
    if subset is not None and subset < MIN_SUBSET:
        raise ValueError(
            f"subset must be at least {MIN_SUBSET} training images (it sets {MIN_SUBSET // 5} for validation), "
            f"got {subset}"
        )
    data = load_cifar10(root, val_size=val_size, seed=seed, download=download)
    if subset is None:
        return data
    if subset > len(data.train):
        raise ValueError(
            f"subset {subset} is more than the {len(data.train)} training images; leave --subset out to use them all"
        )
    return data.subset(subset, subset // 5, subset // 5, seed)


def _is_image_folder(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def _list_image_folder(split_dir: Path) -> list[tuple[Path, int]]:
    missing = [name for name in CLASSES if not (split_dir / name).is_dir()]
    if missing:
        raise DataNotFoundError(
            f"{split_dir} lacks class folder(s) {missing}; an image-folder copy needs one folder per CIFAR-10 class"
        )
    files = [
        (path, label)
        for label, name in enumerate(CLASSES)
        for path in sorted((split_dir / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {split_dir}/<class>/")
    return files


def _decode(files: list[tuple[Path, int]], split: str) -> tuple[np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm

    images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    bar = tqdm(files, desc=f"decoding {split} images (once)", leave=False, disable=None)  # shown on terminals only
    for i, (path, _) in enumerate(bar):
        try:
            array = np.asarray(read_rgb(path))
        except ImageError as error:
            raise ImageError(f"{path} {error.problem}; remove or replace this file in the image folder") from None
        if array.shape != (32, 32, 3):
            raise VitTutorialError(
                f"{path} is {array.shape[1]}x{array.shape[0]}, expected a 32x32 CIFAR-10 image; remove or replace it"
            )
        images[i] = array
    return images, np.array([label for _, label in files], dtype=np.int64)


def _read_cache(cache: Path, listings: dict[str, list]) -> dict[str, np.ndarray]:
    """The decoded arrays, or {} when the cache is missing, unreadable or does not fit the folder's listing:
    a damaged cache is rebuilt, never trusted and never fatal."""
    if not cache.is_file():
        return {}
    try:
        with np.load(cache) as stored:
            arrays = {name: stored[name] for name in stored.files}
        for split, files in listings.items():
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if images.shape != (len(files), 32, 32, 3) or images.dtype != np.uint8 or labels.shape != (len(files),):
                return {}
            if not np.array_equal(labels, [label for _, label in files]):
                return {}
        return arrays
    except (*UNREADABLE_FILE_ERRORS, KeyError):
        return {}


def _load_image_folder(root: Path):
    listings = {split: _list_image_folder(root / split) for split in ("train", "test")}
    names = "\n".join(f"{p.relative_to(root)}" for files in listings.values() for p, _ in files)
    fingerprint = hashlib.sha256(names.encode()).hexdigest()[:16]
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    cache = cache_dir() / f"cifar10-imagefolder-{key}-{fingerprint}.npz"
    arrays = _read_cache(cache, listings)
    if not arrays:
        for split, files in listings.items():
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = _decode(files, split)
        _write_cache(cache, arrays)
    suffixes = sorted({p.suffix.lower() for files in listings.values() for p, _ in files})
    provenance = {
        "source": "image-folder",
        "root": str(root),
        "file_types": suffixes,
        "description": "CIFAR-10, JPEG copy" if suffixes in ([".jpg"], [".jpeg"]) else "CIFAR-10, image folder",
        "fingerprint": fingerprint,
    }
    return (
        _to_tensors(arrays["train_images"], arrays["train_labels"]),
        _to_tensors(arrays["test_images"], arrays["test_labels"]),
        provenance,
    )


def _write_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the decoded arrays atomically; if the cache folder cannot be written, go on without a cache."""
    import warnings

    try:
        write_atomically(
            cache, lambda handle: np.savez(handle, **arrays), advice=f"set {CACHE_ENV} to a writable folder"
        )
    except VitTutorialError as error:
        warnings.warn(f"{first_line(error)}; the images will be decoded again next time", stacklevel=3)


def _load_torchvision(root: Path, download: bool):
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    try:
        train = TorchvisionCIFAR10(str(root), train=True, download=download)
        test = TorchvisionCIFAR10(str(root), train=False, download=download)
    except (OSError, RuntimeError) as error:
        raise DataNotFoundError(
            f"could not get CIFAR-10 through torchvision into {root} ({first_line(error)}); check the network, "
            f"or point {DATA_ENV} at an image-folder copy (train/<class>/*, test/<class>/*)"
        ) from None
    provenance = {"source": "torchvision", "root": str(root), "description": "CIFAR-10, original (torchvision)"}
    return (
        _to_tensors(train.data, np.asarray(train.targets)),
        _to_tensors(test.data, np.asarray(test.targets)),
        provenance,
    )


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W, C) uint8 numpy -> (N, C, H, W) uint8 tensor, and int64 labels."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), torch.from_numpy(
        labels.astype(np.int64)
    )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images (B, 3, H, W) -> float32 standardised with CIFAR10_MEAN / CIFAR10_STD."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(CIFAR10_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize`: standardised (B, 3, H, W) -> values in [0, 1]."""
    mean = torch.tensor(CIFAR10_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)


def batches(
    split: Split,
    batch_size: int,
    *,
    device: torch.device | str = "cpu",
    shuffle: bool = False,
    augment: str = "none",
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    **augment_options: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield normalised float batches (B, 3, 32, 32) and labels (B,) on `device`.

    Shuffling and augmentation draw from `generator`, which must live on the split's device;
    `augment_options` (randaugment_n, randaugment_m) go to `augment_batch`.
    """
    n = len(split)
    if (shuffle or augment != "none") and generator is None:
        raise ValueError("batches() needs a generator when shuffle or augment is on, so runs are reproducible")
    order = torch.randperm(n, generator=generator, device=split.labels.device) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            images, labels = split.images[start : start + batch_size], split.labels[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            images, labels = split.images[index], split.labels[index]
        if augment != "none":
            images = augment_batch(images, augment, generator, **augment_options)
        yield normalize(images.to(device, non_blocking=True)), labels.to(device, non_blocking=True)
