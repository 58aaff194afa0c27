"""Train a grid of named recipes side by side and rank them by validation accuracy.

A grid is a small TOML file: a `[base]` table of overrides shared by every recipe, and one
`[recipes.NAME]` table per recipe. Keys are `TrainConfig` and `ViTConfig` fields, plus `model`
("vit" or "resnet"):

    [base]
    epochs = 200
    augment = "trivialaugment"

    [recipes.light]
    augment = "flip-crop"

    [recipes.mixed]
    mixup = 0.8
    cutmix = 1.0

Each recipe trains in its own worker process, `parallel` at a time on one device, into an ordinary run
folder `OUT/NAME` (resumable: a re-run skips finished recipes and resumes interrupted ones). The test
set is never touched; `evaluate` scores the winner. `OUT/results.json` holds every recipe with its
history, `OUT/results.md` the table, and `OUT/winner.pt` a copy of the best recipe's weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .errors import VitTutorialError, first_line
from .files import write_json, write_text
from .registry import FROM_SCRATCH, spec_named

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LOG = "log.txt"


class GridError(VitTutorialError):
    """A grid file that cannot be read or names fields that do not exist."""


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str  # a registry name that trains from scratch: "vit" or "resnet"
    model_config: Any
    train_config: TrainConfig
    overrides: dict[str, Any]  # what this recipe sets on top of the base

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "model_config": self.model_config.to_dict(),
            "train_config": self.train_config.to_dict(),
            "overrides": self.overrides,
        }


def load_grid(path: str | os.PathLike) -> list[Recipe]:
    """The recipes of a grid file, each fully configured; any mistake is one GridError naming file, recipe and key."""
    path = Path(path)
    try:
        grid = _read_toml(path)
    except OSError as error:
        raise GridError(
            f"cannot read grid {path} ({first_line(error)}); pass a TOML file of [base] and [recipes.NAME] tables"
        ) from None
    except ValueError as error:
        raise GridError(f"{path} is not valid TOML ({first_line(error)})") from None
    unknown = sorted(set(grid) - {"base", "recipes"})
    recipes = grid.get("recipes")
    if unknown or not isinstance(recipes, dict) or not recipes:
        raise GridError(f"{path} needs a [base] table and one or more [recipes.NAME] tables (found {sorted(grid)})")
    base = grid.get("base", {})
    return [_recipe(path, name, base, overrides) for name, overrides in recipes.items()]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def _recipe(path: Path, name: str, base: dict[str, Any], overrides: Any) -> Recipe:
    where = f"{path} [recipes.{name}]"
    if not NAME.match(name):
        raise GridError(f"{where}: a recipe name becomes a folder name; use letters, digits, '.', '_' and '-'")
    if not isinstance(overrides, dict):
        raise GridError(f"{where} must be a table of settings, got {overrides!r}")
    nested = [key for key, value in overrides.items() if isinstance(value, dict)]
    if nested:
        raise GridError(
            f'{where}.{nested[0]} is a table, not a setting; a recipe name with a dot needs quotes: [recipes."a.b"]'
        )
    values = {**base, **overrides}
    model = values.pop("model", "vit")
    if model not in FROM_SCRATCH:
        raise GridError(f"{where}: model must be one of {list(FROM_SCRATCH)}, got {model!r}")
    config_class = spec_named(model).config_class
    model_fields = {f.name for f in dataclasses.fields(config_class)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - model_fields - train_fields)
    if unknown:
        raise GridError(
            f"{where}: unknown setting(s) {unknown}; settings are TrainConfig fields, {model} fields or 'model'"
        )
    try:
        model_config = config_class(**{k: v for k, v in values.items() if k in model_fields})
        train_config = TrainConfig(**{k: v for k, v in values.items() if k in train_fields})
    except (ValueError, TypeError) as error:
        raise GridError(f"{where}: {first_line(error)}") from None
    return Recipe(name, model, model_config, train_config, dict(overrides))


@dataclass(frozen=True)
class SweepOptions:
    """Where the data comes from and how the workers train; the same for every recipe."""

    device: str = "auto"
    data: str | None = None
    download: bool = False
    subset: int | None = None
    compile: bool = False


def run_sweep(
    grid: str | os.PathLike,
    out: str | os.PathLike,
    *,
    parallel: int = 1,
    options: SweepOptions = SweepOptions(),
    log=print,
) -> list[dict[str, Any]]:
    """Train every recipe of `grid` that has not finished under `out`, then write the results; returns their rows."""
    if not isinstance(parallel, int) or parallel < 1:
        raise ValueError(f"parallel must be a positive number of workers, got {parallel!r}")
    recipes = load_grid(grid)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pending = [r for r in recipes if not _finished(out / r.name)]
    for recipe in recipes:
        if recipe not in pending:
            log(f"{recipe.name}: finished earlier, skipped")
    threads = max(1, (os.cpu_count() or 1) // parallel)
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    started = time.perf_counter()
    try:
        while pending or running:
            while pending and len(running) < parallel:
                recipe = pending.pop(0)
                running[recipe.name] = _start_worker(recipe, out / recipe.name, options, threads)
                log(f"{recipe.name}: started ({'resuming' if (out / recipe.name / 'last.pt').is_file() else 'new'})")
            time.sleep(0.5)
            for name, (process, handle) in list(running.items()):
                if process.poll() is not None:
                    handle.close()
                    del running[name]
                    status = "finished" if process.returncode == 0 else f"failed: {_last_line(out / name / LOG)}"
                    log(f"{name}: {status} ({time.perf_counter() - started:.0f} s into the sweep)")
    except KeyboardInterrupt:
        for process, _ in running.values():
            process.terminate()
        for process, handle in running.values():
            process.wait()
            handle.close()
        raise VitTutorialError(
            f"interrupted; finished epochs are kept in {out}/NAME/last.pt: run the same sweep again to resume"
        ) from None
    rows = collect_results(recipes, out)
    write_results(rows, out)
    return rows


def _finished(folder: Path) -> bool:
    return (folder / "best.pt").is_file()


def _start_worker(recipe: Recipe, folder: Path, options: SweepOptions, threads: int):
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"recipe": recipe.to_dict(), "options": dataclasses.asdict(options), "folder": str(folder)}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "VIT_TUTORIAL_THREADS": str(threads)}
    handle = open(folder / LOG, "a")  # noqa: SIM115 (the worker writes to it until it ends; closed when reaped)
    process = subprocess.Popen(
        [sys.executable, "-m", "vit_tutorial.sweep", json.dumps(spec)], stdout=handle, stderr=subprocess.STDOUT, env=env
    )
    return process, handle


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def worker(spec: dict[str, Any]) -> None:
    """Train one recipe into its folder (resuming if it was interrupted); the test set is not evaluated."""
    import torch

    from .data import load_data
    from .registry import build_model
    from .train import fit

    torch.set_num_threads(int(os.environ.get("VIT_TUTORIAL_THREADS", torch.get_num_threads())))
    recipe, options, folder = spec["recipe"], SweepOptions(**spec["options"]), Path(spec["folder"])
    model_config = spec_named(recipe["model"]).config_class.from_dict(recipe["model_config"])
    train_config = TrainConfig.from_dict(recipe["train_config"])
    data = load_data(
        options.data,
        val_size=train_config.val_size,
        seed=train_config.seed,
        download=options.download,
        subset=options.subset,
    )
    print(
        f"{recipe['name']}: {data.provenance['description']} ({len(data.train)} train / {len(data.val)} val)",
        flush=True,
    )
    result = fit(
        build_model(model_config, train_config.seed),
        data,
        train_config,
        device=options.device,
        out_dir=folder,
        resume=(folder / "last.pt").is_file(),
        progress=False,
        compile=options.compile,
    )
    write_json(folder / "history.json", result.history)


def collect_results(recipes: list[Recipe], out: Path) -> list[dict[str, Any]]:
    """One row per recipe, finished ones by validation accuracy (best first), failed ones last."""
    from .checkpoint import load_checkpoint
    from .errors import CheckpointError

    rows = []
    for recipe in recipes:
        folder = out / recipe.name
        row: dict[str, Any] = {"recipe": recipe.name, **recipe.to_dict(), "folder": str(folder)}
        del row["name"]
        try:
            best = load_checkpoint(folder / "best.pt")
        except CheckpointError:
            row.update(status="failed", error=_last_line(folder / LOG))
            rows.append(row)
            continue
        if (
            best.get("train_config") != recipe.train_config.to_dict()
            or best.get("model_config") != recipe.model_config.to_dict()
        ):
            row.update(
                status="failed", error=f"{folder} holds a run of another recipe; move it away to retrain this one"
            )
            rows.append(row)
            continue
        history = best["history"]
        speeds = [h.get("train_images_per_second", h["images_per_second"]) for h in history]
        row.update(
            status="finished",
            best_val_accuracy=best["best_val_accuracy"],
            best_epoch=best["best_epoch"],
            epochs_run=best["epochs_run"],
            stopped_early=best["stopped_early"],
            wall_seconds=best["wall_seconds"],
            images_per_second=sum(speeds) / len(speeds),
            hardware=best["hardware"],
            provenance=best["provenance"],
            history=history,
        )
        rows.append(row)
    return sorted(rows, key=lambda r: (r["status"] != "finished", -r.get("best_val_accuracy", 0.0)))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def write_results(rows: list[dict[str, Any]], out: Path) -> None:
    """results.json (everything, histories included), results.md (the table) and winner.pt (the best weights)."""
    write_json(out / "results.json", {"recipes": rows})
    lines = [
        "| rank | recipe | best val accuracy | best epoch | epochs run | wall time | train images/s | settings |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for rank, row in enumerate(rows, start=1):
        settings = ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) or "(base)"
        if row["status"] == "finished":
            lines.append(
                f"| {rank} | {row['recipe']} | {row['best_val_accuracy']:.4f} | {row['best_epoch']} | "
                f"{row['epochs_run']} | "
                f"{_duration(row['wall_seconds'])} | {row['images_per_second']:,.0f} | {settings} |"
            )
        else:
            lines.append(
                f"| {rank} | {row['recipe']} | failed: {row['error'].replace('|', '/')} | | | | | {settings} |"
            )
    write_text(out / "results.md", "\n".join(lines) + "\n")
    finished = [row for row in rows if row["status"] == "finished"]
    if finished:
        shutil.copyfile(Path(finished[0]["folder"]) / "best.pt", out / "winner.pt")


def _worker_main(argv: list[str]) -> int:
    """Entry point of a worker process: on failure, the traceback (for whoever reads the log) and then one line
    saying what failed."""
    import traceback

    try:
        worker(json.loads(argv[0]))
    except Exception as error:  # noqa: BLE001 (any failure ends this recipe only; the sweep reports it and goes on)
        traceback.print_exc()
        print(f"error: {first_line(error, 240)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
