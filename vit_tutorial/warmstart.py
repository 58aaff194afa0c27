"""Runs that do not start from random weights.

- A warm start (`TrainConfig.init_from`) loads another checkpoint's weights, and with `revive` gives the
  attention layers whose query and key weights collapsed fresh ones (chapter 6); the optimiser, schedule and
  history start afresh.
- A cooldown (`TrainConfig.branch_from`) continues a constant-rate run from one of its checkpoints, weights,
  momentum, EMA, schedule position and history, in a folder of its own, and decays the rate to zero over
  `cooldown_epochs` (warmup-stable-decay): the main run goes on untouched, and every cooldown is a finished
  model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_checkpoint, stored_architecture
from .config import TrainConfig
from .diagnostics import revive_collapsed
from .errors import CheckpointError, first_line, option, shown
from .registry import architecture_of, config_of
from .run_folder import check_same_data, stored_record

BRANCH_CHANGES = ("epochs", "cooldown_epochs", "branch_from", "patience")  # what a cooldown sets for itself


def start_from(
    model: nn.Module, config: TrainConfig, provenance: dict[str, Any], measure: Callable[[nn.Module], dict[str, Any]]
) -> dict[str, Any]:
    """A warm start: load the weights of the checkpoint `config.init_from` into `model` and, with
    `config.revive` > 0, give its collapsed attention layers fresh query/key weights of that scale
    (`diagnostics.revive_collapsed`). The optimiser, schedule and history start afresh; a resumed run then
    loads its own last epoch over these weights. Returns what the run's record keeps of its start: the
    checkpoint (file name, content hash, how it was trained, its test accuracy), its query/key norms and
    CLS spreads (`measure`, the run's diagnostics) as loaded, and the layers revived.

    Raises:
        CheckpointError: the file is unreadable, holds another model, or was validated on another split
            (its validation images could then be among those it learned from, and would flatter it).
    """
    source = config.init_from
    payload = load_checkpoint(source)
    if (
        stored_architecture(payload, source) != architecture_of(model)
        or payload["model_config"] != config_of(model).to_dict()
    ):
        raise CheckpointError(
            f"{option('init_from')} {source} holds a {stored_architecture(payload, source)} {payload['model_config']}, "
            f"not this run's {architecture_of(model)} {config_of(model).to_dict()}; "
            "start from a checkpoint of the same model"
        )
    stored = payload.get("provenance", {})
    for key in ("split_seed", "val_size"):
        if key in stored and key in provenance and stored[key] != provenance[key]:
            raise CheckpointError(
                f"{option('init_from')} {source} was validated on another split "
                f"({key} {stored[key]}, this run {provenance[key]}): its validation images may be among those it "
                "learned from; use the same seed and val_size"
            )
    model.load_state_dict(payload["model"])
    start = {
        "checkpoint": os.path.basename(source),
        "content_sha256": payload.get("content_sha256", ""),
        "hardware": payload.get("hardware", ""),
        "note": payload.get("note", ""),
        "epochs_run": payload.get("epochs_run", 0),
        "test_accuracy": (payload.get("test_metrics") or {}).get("accuracy"),
        **measure(model),
    }
    generator = torch.Generator().manual_seed(config.seed)
    start["revived"] = revive_collapsed(model, generator, config.revive) if config.revive else []
    start["revive_scale"] = config.revive
    if config.revive:
        print(
            f"started from {source}; revived layers: {', '.join(map(str, start['revived'])) or 'none had collapsed'}",
            flush=True,
        )
    return start


def branch(run) -> None:
    """Start `run` (a `train.Run` whose config has `branch_from`) as a cooldown of that checkpoint: its weights,
    optimiser state (momentum), schedule position, EMA and history carry over; the best epoch is chosen
    afresh among the cooldown's own epochs. The run's configuration must be the checkpoint's but for
    `BRANCH_CHANGES`, its `epochs` the checkpoint's epochs plus `cooldown_epochs`.

    Raises:
        CheckpointError: the file is unreadable, not from a constant-rate run, has no optimiser state, was
            trained with other options or on other data, or the epochs do not add up.
    """
    config = run.config
    source = Path(config.branch_from)
    payload = load_checkpoint(source)
    stored = stored_record(source, payload, run.record.model_config)
    main = stored.train_config
    if main.schedule != "constant" or main.cooldown_epochs or main.branch_from:
        raise CheckpointError(
            f"{shown(source)} is not from a constant-rate run (schedule {main.schedule}, cooldown_epochs "
            f"{main.cooldown_epochs}); branch a cooldown from the main run's last.pt or one of its snapshots"
        )
    if "optimizer" not in payload or "scheduler" not in payload:
        raise CheckpointError(
            f"{shown(source)} holds weights only (a best.pt?); branch from the run's last.pt or a snapshot"
        )
    end = stored.epochs_run + config.cooldown_epochs
    if config.epochs != end:
        raise CheckpointError(
            f"{shown(source)} ends after epoch {stored.epochs_run}, so a cooldown of {config.cooldown_epochs} "
            f"epochs ends at epoch {end}: give {option('epochs', end)}"
        )
    differing = [
        k
        for k in TrainConfig.__dataclass_fields__
        if k not in BRANCH_CHANGES and getattr(main, k) != getattr(config, k)
    ]
    if differing:
        raise CheckpointError(
            f"{shown(source)} was trained with other options ({', '.join(differing)} differ); a cooldown takes the "
            f"main run's options, with {option('branch_from')}, {option('cooldown_epochs')} and {option('epochs')}"
        )
    check_same_data(source, payload.get("provenance") or {}, run.record.provenance)
    try:
        run.restore(payload, {})
    except (KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{shown(source)} cannot be continued ({first_line(error, 160)})") from None
    run.restart_selection()
    run.record.branched_from = {
        "checkpoint": str(source),
        "content_sha256": payload.get("content_sha256", ""),
        "epochs_run": stored.epochs_run,
        "val_accuracy": stored.history[-1].val_accuracy if stored.history else None,
    }
