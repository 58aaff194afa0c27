"""Ship a finished run's record (no weights) inside the package, for chapters that compare against it.

    python tools/record_run.py runs/NAME --name NAME [--note "..."]

Writes vit_tutorial/pretrained/NAME_run.json: configs, history, hardware, wall time, data provenance, the
test metrics, and the prediction for every test image, measured here on the data the package finds. A
ResNet-18 checkpoint is 45 MB; its record is about 100 kB.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vit_tutorial.checkpoint import load_checkpoint, model_from_checkpoint
from vit_tutorial.data import load_data
from vit_tutorial.errors import VitTutorialError, first_line
from vit_tutorial.runs import run_record, write_run_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder holding best.pt, or a checkpoint file")
    parser.add_argument("--name", required=True, help="the record's name: vit_tutorial/pretrained/NAME_run.json")
    parser.add_argument("--note", default="", help="a sentence on how the run was made")
    args = parser.parse_args()
    try:
        path = args.run / "best.pt" if args.run.is_dir() else args.run
        payload = load_checkpoint(path)
        train_config = payload.get("train_config") or {}
        data = load_data(val_size=train_config.get("val_size", 5000), seed=train_config.get("seed", 0))
        model = model_from_checkpoint(payload, str(path)).eval()
        written = write_run_record(run_record(payload, model, data, args.note), args.name)
    except (VitTutorialError, ValueError, OSError) as error:
        sys.exit(f"record_run: {first_line(error)}")
    print(f"wrote {written} ({written.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
