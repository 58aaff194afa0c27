"""Ship a finished sweep's results (no weights) inside the package, for the training chapter's ablation table.

    python tools/record_sweep.py runs/SWEEP --grid grids/GRID.toml --name NAME [--note "..."]

Writes vit_tutorial/pretrained/NAME_sweep.json from SWEEP/results.json: each recipe's settings, best
validation accuracy and epoch, epochs run, wall time, images/s and per-epoch accuracies. The test set plays
no part: a sweep never touches it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vit_tutorial.records import sweep_record, write_sweep_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep's output folder, holding results.json")
    parser.add_argument("--grid", required=True, help="the grid file the sweep ran, as named in the repository")
    parser.add_argument("--name", required=True, help="the record's name: vit_tutorial/pretrained/NAME_sweep.json")
    parser.add_argument("--note", default="", help="a sentence on where and how the sweep ran")
    args = parser.parse_args()
    try:
        results = json.loads((args.sweep / "results.json").read_text())
        written = write_sweep_record(sweep_record(results, args.grid, args.note), args.name)
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"record_sweep: {args.sweep}/results.json is not a sweep's results ({error})")
    print(f"wrote {written} ({written.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
