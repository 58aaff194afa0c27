"""The record of a training run: one typed dataclass, from which everything else that describes a run follows.

`fit` fills a `RunRecord` epoch by epoch; `best.pt` and `last.pt` carry it (with the weights, and in
`last.pt` the optimiser's state too); the command line and the sweep read it back typed; the package
ships its `SHIPPED` fields without weights (`runs.run_record`); and the checkpoint schema is derived from
its field types (`CHECKPOINT_SCHEMA`), so there is no second list of fields to keep in step.

Each epoch of the history is one `EpochEntry`, built in one place (`train.Run.finish_epoch`); the log line,
the history file, the sweep's table and the shipped records all read their fields from it. Files hold
the entries as plain dicts (`EpochEntry.to_dict`), read back and checked by `EpochEntry.from_dict`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .config import TrainConfig
from .registry import spec_named


@dataclass
class EpochEntry:
    """What one epoch of a run measured."""

    epoch: int  # 1-based
    lr: float  # the learning rate of the epoch's first step
    train_loss: float  # mean loss on the epoch's (augmented) training batches
    train_accuracy: float  # on the same batches, as the model saw them while it learned
    val_loss: float
    val_accuracy: float
    seconds: float  # training and validation
    images_per_second: float  # training images over `seconds`
    train_images_per_second: float | None = None  # over the training part alone
    clipped: float | None = None  # share of the epoch's steps whose gradient norm was clipped
    threads: int | None = None  # CPU threads the epoch trained with
    qk_norms: list[list[float]] | None = None  # per attention layer, |W_q| and |W_k| (`diagnostics`)
    cls_spread: list[float] | None = None  # per layer, how uneven the CLS token's attention is (0: uniform)
    train_clean_accuracy: float | None = None  # on a fixed slice of training images, without augmentation
    measured_after_training: bool = False  # diagnostics of kept weights, added to a record that predates them

    def to_dict(self) -> dict[str, Any]:
        """The entry as a file holds it: fields that were not measured are left out."""
        values = dataclasses.asdict(self)
        return {k: v for k, v in values.items() if v is not None and (k != "measured_after_training" or v)}

    @classmethod
    def from_dict(cls, values: Any) -> EpochEntry:
        """An entry read from a file, every field checked against its type.

        Raises:
            ValueError: not a dict of this class's fields, or a field of the wrong type.
        """
        if not isinstance(values, dict):
            raise ValueError(f"a history entry is a dict of an epoch's figures, found {type(values).__name__}")
        unknown = sorted(set(map(str, values)) - set(ENTRY_TYPES))
        if unknown:
            raise ValueError(f"a history entry has unknown field(s) {unknown}")
        for key, value in values.items():
            if not _is_stored_as(value, ENTRY_TYPES[key]):
                raise ValueError(f"history field {key!r} should be {ENTRY_TYPES[key]}, found {value!r:.60}")
        return cls(**values)

    def summary(self) -> str:
        """The entry as the log line a run prints after each epoch."""
        clean = f"  clean train acc {self.train_clean_accuracy:.3f}" if self.train_clean_accuracy is not None else ""
        return (
            f"epoch {self.epoch:3d}  train loss {self.train_loss:.3f} acc {self.train_accuracy:.3f}  "
            f"val loss {self.val_loss:.3f} acc {self.val_accuracy:.3f}{clean}  {self.seconds:.1f}s"
        )


def _is_stored_as(value: Any, kind: str) -> bool:
    """Whether a value read from a file is of an entry field's kind (see ENTRY_TYPES)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return number
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list[float]":
        return isinstance(value, list) and all(_is_stored_as(v, "float") for v in value)
    return isinstance(value, list) and all(_is_stored_as(v, "list[float]") for v in value)  # list[list[float]]


ENTRY_TYPES: dict[str, str] = {f.name: str(f.type).removesuffix(" | None") for f in dataclasses.fields(EpochEntry)}


@dataclass
class RunRecord:
    architecture: str  # the registry name of the model ("vit", "resnet", "vit_b_16")
    model_config: Any  # a ViTConfig, ResNetConfig or FineTuneConfig
    train_config: TrainConfig
    provenance: dict[str, Any]  # which data, from where (see `data.load_cifar10`)
    hardware: str  # the device it trained on, in words
    precision: str = "fp32"  # "bf16" (autocast) or "fp32"
    history: list[EpochEntry] = field(default_factory=list)  # one entry per finished epoch
    best_epoch: int = 0  # 1-based epoch whose weights are kept (0: none yet)
    best_val_accuracy: float = -1.0
    epochs_run: int = 0
    stopped_early: bool = False
    wall_seconds: float = 0.0
    config_changes: list[dict[str, Any]] = field(default_factory=list, metadata={"shipped": False})
    note: str = ""  # what the run is, for people
    test_metrics: dict[str, Any] | None = None  # set once, when the chosen model is scored on the test set
    started_from: dict[str, Any] | None = None  # a warm start: the checkpoint it began from (`train.start_from`)
    branched_from: dict[str, Any] | None = None  # a cooldown: the checkpoint of the run it continues (`runs.branch`)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for `torch.save` and JSON: the configs as dicts."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["history"] = [entry.to_dict() for entry in self.history]
        values["model_config"] = self.model_config.to_dict()
        values["train_config"] = self.train_config.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunRecord:
        """The record in a checkpoint or JSON file; other keys (weights, optimiser state) are ignored, fields
        a file written by an older version lacks take their defaults, and both configs are validated.

        Raises:
            ValueError or TypeError: a config that does not validate, or a missing required field.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        present = {key: value for key, value in values.items() if key in known}
        present["model_config"] = spec_named(values["architecture"]).config_class.from_dict(values["model_config"])
        present["train_config"] = TrainConfig.from_dict(values.get("train_config") or {})
        history = present.get("history", [])
        if not isinstance(history, list):
            raise ValueError(f"a run's history is a list of epochs, found {type(history).__name__}")
        present["history"] = [EpochEntry.from_dict(entry) for entry in history]
        return cls(**present)

    def is_run_of(self, model_config: Any, train_config: TrainConfig) -> bool:
        """Whether this is a run of exactly these configs (the same recipe)."""
        return self.model_config == model_config and self.train_config == train_config

    def shipped(self) -> dict[str, Any]:
        """The fields a shipped run record keeps (all but the resume bookkeeping)."""
        return {key: value for key, value in self.to_dict().items() if key in SHIPPED}


SHIPPED: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunRecord) if f.metadata.get("shipped", True))

# What a checkpoint holds besides the record: the weights, and in last.pt what resuming needs.
CHECKPOINT_STATE: dict[str, tuple[type, ...]] = {
    "model": (dict,),
    "best_model": (dict,),
    "ema": (dict,),
    "optimizer": (dict,),
    "scheduler": (dict,),
    "bad_epochs": (int,),
}


def _stored_types(hint: Any) -> tuple[type, ...]:
    """The types a field is stored as: configs as dicts, `X | None` as X or None, `float` also as int."""
    if hint is TrainConfig or hint is Any:
        return (dict,)
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    options = typing.get_args(hint) if union else (hint,)
    stored: list[type] = []
    for option in options:
        origin = typing.get_origin(option) or option
        stored.append(type(None) if option is type(None) else origin)
        if option is float:
            stored.append(int)
    return tuple(stored)


RECORD_SCHEMA: dict[str, tuple[type, ...]] = {
    name: _stored_types(hint) for name, hint in typing.get_type_hints(RunRecord).items()
}
CHECKPOINT_SCHEMA: dict[str, tuple[type, ...]] = {**RECORD_SCHEMA, **CHECKPOINT_STATE}
