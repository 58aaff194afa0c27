"""Turn a finished training run into the checkpoint shipped inside the package.

    python tools/ship_pretrained.py runs/NAME [--note "..."]

Keeps the best weights (float32), both configs (a warm start's or a cooldown's checkpoint by file name only),
the history, the data provenance (without the local path), the hardware, the wall time and the test metrics
from the run's metrics.json, which it measures once itself for a run trained with `--no-test` (the campaign's
cooldowns, chosen by validation); drops the optimiser state. Refuses a run without full test-set metrics, a model other
than the ViT, or a result over 10 MB, and leaves the shipped checkpoint as it was when it refuses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vit_tutorial.checkpoint import load_checkpoint, save_checkpoint, stored_architecture
from vit_tutorial.errors import VitTutorialError, first_line
from vit_tutorial.pretrained import PRETRAINED
from vit_tutorial.record import RunRecord

LIMIT = 10 * 1000 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder holding best.pt and metrics.json")
    parser.add_argument("--note", default="", help="a sentence on how the run was made")
    args = parser.parse_args()
    try:
        ship(args.run, args.note)
    except (VitTutorialError, ValueError, OSError) as error:
        sys.exit(f"ship_pretrained: {first_line(error)}")


def ship(run: Path, note: str) -> None:
    best = load_checkpoint(run / "best.pt")
    if stored_architecture(best) != "vit":
        raise ValueError(f"{run} holds a {stored_architecture(best)} model; the package ships the book's ViT only")
    if not (run / "metrics.json").is_file():  # a run trained with --no-test: its one test-set score, here
        measure_test(run, best)
    metrics = json.loads((run / "metrics.json").read_text())
    if metrics.get("provenance", {}).get("subset") or metrics.get("num_images") != 10_000:
        raise ValueError(
            f"{run}/metrics.json was measured on {metrics.get('num_images')} images; ship a full test-set score"
        )
    record = RunRecord.from_dict(best)
    record.provenance = {k: v for k, v in record.provenance.items() if k != "root"}
    if record.train_config.init_from:  # a warm start: its file name, not a path on the machine that trained it
        record.train_config = record.train_config.replace(init_from=os.path.basename(record.train_config.init_from))
    if record.train_config.branch_from:  # a cooldown: likewise, the snapshot it branched from by file name
        record.train_config = record.train_config.replace(branch_from=os.path.basename(record.train_config.branch_from))
        if record.branched_from:
            record.branched_from["checkpoint"] = os.path.basename(record.branched_from["checkpoint"])
    record.note = note
    record.test_metrics = {
        k: metrics[k] for k in ("accuracy", "loss", "num_images", "per_class", "macro_avg", "confusion_matrix")
    }
    payload = {**record.to_dict(), "model": best["model"]}  # the record and the weights, no resume state
    staged = save_checkpoint(PRETRAINED.with_name(PRETRAINED.name + ".staged"), payload)
    size = staged.stat().st_size
    if size > LIMIT:
        staged.unlink()
        raise ValueError(
            f"the checkpoint would be {size:,} bytes, over the {LIMIT:,} limit; the shipped one is unchanged"
        )
    os.replace(staged, PRETRAINED)  # the old checkpoint stays until the new one is whole and within the limit
    print(
        f"wrote {PRETRAINED} ({size:,} bytes): test accuracy {metrics['accuracy']:.4f}, best epoch {record.best_epoch}"
    )


def measure_test(run: Path, best: dict) -> None:
    """Score the run's chosen weights on the whole test set, once, into its metrics.json."""
    from vit_tutorial.checkpoint import CHECKSUM, model_from_checkpoint
    from vit_tutorial.data import load_data
    from vit_tutorial.evaluate import save_metrics, test_metrics

    record = RunRecord.from_dict(best)
    data = load_data(val_size=record.train_config.val_size, seed=record.train_config.seed, test_only=True)
    model = model_from_checkpoint(best, str(run / "best.pt")).eval()
    metrics = test_metrics(model, data.test, record, checkpoint="best.pt", checkpoint_sha256=best[CHECKSUM])
    save_metrics(metrics, run / "metrics.json")
    print(f"measured the test set once: accuracy {metrics['accuracy']:.4f} ({data.provenance['description']})")


if __name__ == "__main__":
    main()
