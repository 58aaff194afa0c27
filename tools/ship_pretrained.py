"""Turn a finished training run into the checkpoint shipped inside the package.

    python tools/ship_pretrained.py runs/NAME [--note "..."]

Keeps the best weights (float32), both configs, the history, the data provenance (without the local
path), the hardware, the wall time and the test metrics from the run's metrics.json; drops the
optimiser state. Refuses a run without metrics or a result over 10 MB.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vit_tutorial.checkpoint import load_checkpoint, save_checkpoint
from vit_tutorial.pretrained import PRETRAINED

LIMIT = 10 * 1000 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder holding best.pt and metrics.json")
    parser.add_argument("--note", default="", help="a sentence on how the run was made")
    args = parser.parse_args()
    best = load_checkpoint(args.run / "best.pt")
    metrics = json.loads((args.run / "metrics.json").read_text())
    provenance = {k: v for k, v in best["provenance"].items() if k != "root"}
    keep = (
        "model_config",
        "train_config",
        "model",
        "history",
        "best_epoch",
        "best_val_accuracy",
        "hardware",
        "wall_seconds",
        "epochs_run",
        "stopped_early",
    )
    payload = {key: best[key] for key in keep}
    payload.update(
        provenance=provenance,
        note=args.note,
        test_metrics={
            k: metrics[k] for k in ("accuracy", "loss", "num_images", "per_class", "macro_avg", "confusion_matrix")
        },
    )
    save_checkpoint(PRETRAINED, payload)
    size = PRETRAINED.stat().st_size
    if size > LIMIT:
        PRETRAINED.unlink()
        sys.exit(f"the checkpoint would be {size:,} bytes, over the {LIMIT:,} limit; nothing shipped")
    print(
        f"wrote {PRETRAINED} ({size:,} bytes): test accuracy {metrics['accuracy']:.4f}, best epoch {best['best_epoch']}"
    )


if __name__ == "__main__":
    main()
