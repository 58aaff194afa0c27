"""The record of a training run: one typed dataclass, from which everything else that describes a run follows.

`fit` fills a `RunRecord` epoch by epoch; `best.pt` and `last.pt` carry it (with the weights, and in
`last.pt` the optimiser's state too); the command line and the sweep read it back typed; the package
ships its `SHIPPED` fields without weights (`runs.run_record`); and the checkpoint schema is derived from
its field types (`CHECKPOINT_SCHEMA`), so there is no second list of fields to keep in step.

History entries are plain dicts, one per epoch (see `train.fit` for their keys), so that they read the
same from a checkpoint, a JSON record or a notebook.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .config import TrainConfig


@dataclass
class RunRecord:
    architecture: str  # the registry name of the model ("vit", "resnet", "vit_b_16")
    model_config: Any  # a ViTConfig, ResNetConfig or FineTuneConfig
    train_config: TrainConfig
    provenance: dict[str, Any]  # which data, from where (see `data.load_cifar10`)
    hardware: str  # the device it trained on, in words
    precision: str = "fp32"  # "bf16" (autocast) or "fp32"
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per finished epoch
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
        from .registry import spec_named

        known = {f.name for f in dataclasses.fields(cls)}
        present = {key: value for key, value in values.items() if key in known}
        if "epochs_run" not in present and "epoch" in values:  # last.pt files written before the record
            present["epochs_run"] = values["epoch"]
        architecture = present.get("architecture") or "vit"
        present["architecture"] = architecture
        present["model_config"] = spec_named(architecture).config_class.from_dict(values["model_config"])
        present["train_config"] = TrainConfig.from_dict(values.get("train_config") or {})
        present.setdefault("provenance", {})
        present.setdefault("hardware", "")
        # before the field existed, runs on CUDA trained in bfloat16 autocast and the others in float32
        present.setdefault("precision", "bf16" if "(CUDA)" in present["hardware"] else "fp32")
        return cls(**present)

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
    "epoch": (int,),  # written before the record had epochs_run
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
