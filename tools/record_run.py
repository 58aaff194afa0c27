"""Ship a finished run's record (no weights) inside the package, for chapters that compare against it.

    python tools/record_run.py runs/NAME --name NAME [--note "..."]
    python tools/record_run.py runs/NAME/last.pt --name NAME --history-only --note "..."   # a run in progress

Writes vit_tutorial/pretrained/NAME_run.json: configs, history, hardware, wall time, data provenance, the
test metrics, and the prediction for every test image, measured here on the data the package finds. A
ResNet-18 checkpoint is 45 MB; its record is about 100 kB. `--history-only` ships the record of a run that
has not finished (its last.pt) without touching the test set: no test metrics, no predictions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vit_tutorial.checkpoint import load_checkpoint, model_from_checkpoint
from vit_tutorial.data import load_data
from vit_tutorial.errors import VitTutorialError, first_line
from vit_tutorial.record import RunRecord
from vit_tutorial.records import run_record, write_run_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder holding best.pt, or a checkpoint file")
    parser.add_argument("--name", required=True, help="the record's name: vit_tutorial/pretrained/NAME_run.json")
    parser.add_argument("--note", default="", help="a sentence on how the run was made")
    parser.add_argument(
        "--history-only", action="store_true", help="no test metrics or predictions (a run in progress)"
    )
    args = parser.parse_args()
    try:
        path = args.run / "best.pt" if args.run.is_dir() else args.run
        payload = load_checkpoint(path)
        if args.history_only:
            record = RunRecord.from_dict(payload)
            record.note = args.note or record.note
            record.provenance = {k: v for k, v in record.provenance.items() if k != "root"}
            written = write_run_record(record.shipped(), args.name)
            print(f"wrote {written} ({written.stat().st_size:,} bytes, {record.epochs_run} epochs, no test metrics)")
            return
        train_config = payload.get("train_config") or {}
        data = load_data(val_size=train_config.get("val_size", 5000), seed=train_config.get("seed", 0))
        model = model_from_checkpoint(payload, str(path)).eval()
        written = write_run_record(run_record(payload, model, data, args.note), args.name)
    except (VitTutorialError, ValueError, OSError) as error:
        sys.exit(f"record_run: {first_line(error)}")
    print(f"wrote {written} ({written.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
