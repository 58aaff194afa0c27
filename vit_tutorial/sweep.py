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

Each recipe trains in a worker process, `parallel` at a time on one device, into an ordinary run folder
`OUT/NAME` (resumable: a re-run skips finished recipes and resumes interrupted ones). With `stack`, the
recipes that can (`stacked.stackable`) train together in one worker as one stacked model. The test set
is never touched; `evaluate` scores the winner. `OUT/results.json` holds every recipe with its history,
`OUT/results.md` the table, and `OUT/winner.pt` a copy of the best recipe's weights.

The sweep holds `OUT` for its whole life (a second sweep into it is refused), remembers the data options
it was started with in `OUT/sweep.json` (a re-run with other data is refused, so that recipes trained on
different data are never ranked together), and its workers never outlive it: they stop when it stops,
whatever stopped it, and each watches that its parent is alive.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint
from .config import RunOptions, TrainConfig
from .data import load_cifar10, load_data
from .errors import CheckpointError, Interrupted, VitTutorialError, first_line, shown
from .files import write_atomically, write_json, write_text
from .record import RunRecord
from .registry import FROM_SCRATCH, build_model, spec_named
from .run_folder import locked
from .runs import train_run
from .signals import terminate_as_interrupt
from .stacked import fit_stacked, stackable

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
LOG = "log.txt"
OPTIONS = "sweep.json"
RESULTS, TABLE, WINNER = "results.json", "results.md", "winner.pt"
RESERVED = frozenset({OPTIONS, RESULTS, TABLE, WINNER, LOG})  # the sweep's own files: no recipe may be named so


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

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        model_config = spec_named(values["model"]).config_class.from_dict(values["model_config"])
        train_config = TrainConfig.from_dict(values["train_config"])
        return cls(values["name"], values["model"], model_config, train_config, values["overrides"])


GRIDS = Path(__file__).parent / "grids"  # the grids the book ran or plans, shipped with the package


def grid_path(grid: str | os.PathLike) -> Path:
    """A grid file: `grid` itself, or the shipped grid of that name (`gpu-third` for grids/gpu-third.toml)."""
    path = Path(grid)
    shipped = GRIDS / f"{path.name}.toml"
    return shipped if not path.exists() and path.suffix == "" and shipped.is_file() else path


def load_grid(name: str | os.PathLike) -> list[Recipe]:
    """The recipes of a grid file (or of a shipped grid, by name), each fully configured; any mistake is one
    GridError naming file, recipe and key."""
    path = grid_path(name)
    if path.exists() and not path.is_file():
        raise GridError(f"{shown(path)} is not a file (a folder, a pipe or a device); pass a TOML grid file")
    try:
        grid = _read_toml(path)
    except RecursionError:
        raise GridError(f"{shown(path)} nests tables too deeply to be a grid of [base] and [recipes.NAME]") from None
    except OSError as error:
        raise GridError(
            f"cannot read grid {shown(path)} ({first_line(error)}); pass a TOML file of [base] and [recipes.NAME] "
            "tables"
        ) from None
    except ValueError as error:
        raise GridError(f"{shown(path)} is not valid TOML ({first_line(error)})") from None
    unknown = sorted(set(grid) - {"base", "recipes"})
    recipes = grid.get("recipes")
    if unknown or not isinstance(recipes, dict) or not recipes:
        raise GridError(
            f"{shown(path)} needs a [base] table and one or more [recipes.NAME] tables (found {sorted(grid)})"
        )
    base = grid.get("base", {})
    if not isinstance(base, dict):
        raise GridError(
            f"{shown(path)}: base must be a table of settings ([base] with one key = value a line), got {base!r}"
        )
    return [_recipe(path, name, base, overrides) for name, overrides in recipes.items()]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def _recipe(path: Path, name: str, base: dict[str, Any], overrides: Any) -> Recipe:
    where = f"{shown(path)} [recipes.{name if NAME.fullmatch(name) else repr(name)}]"
    if not NAME.fullmatch(name):
        raise GridError(f"{where}: a recipe name becomes a folder name; use letters, digits, '.', '_' and '-'")
    if name in RESERVED:
        raise GridError(f"{where}: {name} is a file the sweep writes itself; give the recipe another name")
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
    """Where the data comes from, the same for every recipe, and how the workers train (`run`)."""

    data: str | None = None
    download: bool = False
    subset: int | None = None
    run: RunOptions = dataclasses.field(default_factory=RunOptions)
    devices: tuple[str, ...] = ()  # the workers' devices (each takes the least busy); empty: `run.device` for all

    def data_options(self) -> dict[str, Any]:
        """What decides the data the recipes train on: a sweep resumes only with the same."""
        return {"data": self.data, "subset": self.subset}

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "download": self.download,
            "subset": self.subset,
            "run": self.run.to_dict(),
            "devices": list(self.devices),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SweepOptions:
        return cls(**{**values, "run": RunOptions.from_dict(values["run"]), "devices": tuple(values["devices"])})


def run_sweep(
    grid: str | os.PathLike,
    out: str | os.PathLike,
    *,
    parallel: int = 1,
    options: SweepOptions | None = None,
    stack: bool = False,
    log=print,
) -> list[dict[str, Any]]:
    """Train every recipe of `grid` that has not finished under `out`, then write the results; returns their rows.

    Raises:
        RunInUseError: another sweep is writing to `out`.
        VitTutorialError: `out` was swept with other data options, or the sweep was interrupted.
    """
    options = options or SweepOptions()
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ValueError(f"parallel must be a positive number of workers, got {parallel!r}")
    recipes = load_grid(grid)
    out = Path(out)
    with locked(out, "a sweep"):
        _check_options(out, options)
        pending = [r for r in recipes if not _finished(out / r.name)]
        for recipe in recipes:
            if recipe not in pending:
                log(f"{recipe.name}: finished earlier, skipped")
        try:
            _train_all(_groups(pending, stack), out, parallel, options, log)
        finally:  # an interrupted sweep still reports what finished, and how far the others got
            rows = collect_results(recipes, out)
            write_results(rows, out)
    return rows


def _check_options(out: Path, options: SweepOptions) -> None:
    """A sweep folder ranks recipes trained on one data set: the data is identified by its content (the
    fingerprint of its decoded images) and subset, not by the path or variable that named it."""
    path = out / OPTIONS
    wanted = {**options.data_options(), "data_identity": _data_identity(options)}
    if path.is_file():
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError):
            earlier = None
        same = isinstance(earlier, dict) and earlier.get("data_identity", earlier) == wanted["data_identity"]
        if not same:
            then = earlier.get("data_identity", earlier) if isinstance(earlier, dict) else earlier
            raise VitTutorialError(
                f"{shown(out)} was swept with other data options ({then}, now {wanted['data_identity']}); recipes "
                "trained on different data cannot be ranked together: run with the same data (--data, "
                "$VIT_TUTORIAL_DATA, --subset), or choose another --out"
            )
    else:
        write_json(path, wanted)


def _data_identity(options: SweepOptions) -> dict[str, Any]:
    """What the recipes will train on, by content: the data set's source and fingerprint, and the subset."""
    data = load_cifar10(options.data, val_size=1, download=options.download or None)  # the split does not matter
    source, fingerprint = data.provenance["source"], data.provenance["fingerprint"]
    return {"source": source, "fingerprint": fingerprint, "subset": options.subset}


def _groups(recipes: list[Recipe], stack: bool) -> list[list[Recipe]]:
    """What each worker trains: one recipe, or with `stack` every recipe that stacks with it."""
    if not stack:
        return [[recipe] for recipe in recipes]
    groups: list[list[Recipe]] = []
    for recipe in recipes:
        for group in groups:
            pairs = [(r.model_config, r.train_config) for r in (*group, recipe)]
            if group[0].model == recipe.model and stackable(pairs):
                group.append(recipe)
                break
        else:
            groups.append([recipe])
    return groups


def _train_all(groups: list[list[Recipe]], out: Path, parallel: int, options: SweepOptions, log) -> None:
    """Run the workers, `parallel` at a time; whatever ends the sweep (Ctrl-C, SIGTERM, an error) ends them too."""
    threads = max(1, (os.cpu_count() or 1) // min(parallel, max(len(groups), 1)))
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    placed: dict[str, str] = {}  # each running worker's device, with --devices
    started = time.perf_counter()
    pending = list(groups)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                group = pending.pop(0)
                label = "+".join(r.name for r in group)
                run = options.run.replace(threads=threads)
                if options.devices:  # the least busy device
                    placed[label] = min(options.devices, key=lambda d: list(placed.values()).count(d))
                    run = run.replace(device=placed[label])
                running[label] = _start_worker(group, out, dataclasses.replace(options, run=run), threads)
                resuming = any((out / r.name / "last.pt").is_file() for r in group)
                log(f"{label}: started ({'resuming' if resuming else 'new'}{', stacked' if len(group) > 1 else ''})")
            time.sleep(0.5)
            for label, (process, handle) in list(running.items()):
                if process.poll() is not None:
                    handle.close()
                    del running[label]
                    placed.pop(label, None)
                    first = label.split("+")[0]
                    status = "finished" if process.returncode == 0 else f"failed: {_last_line(out / first / LOG)}"
                    log(f"{label}: {status} ({time.perf_counter() - started:.0f} s into the sweep)")
    except KeyboardInterrupt as error:
        raise Interrupted(
            f"interrupted; {shown(out)}/results.md shows how far each recipe got and NAME/last.pt keeps its finished "
            "epochs: run the same sweep again to resume",
            getattr(error, "exit_code", 130),
        ) from None
    finally:
        _stop(running)


def _stop(running: dict[str, tuple[subprocess.Popen, Any]]) -> None:
    """End the workers still running: SIGTERM (each saves nothing half-written and stops), then wait."""
    for process, _ in running.values():
        if process.poll() is None:
            process.terminate()
    for process, handle in running.values():
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        handle.close()


def _finished(folder: Path) -> bool:
    return (folder / "best.pt").is_file()


def _start_worker(group: list[Recipe], out: Path, options: SweepOptions, threads: int):
    folders = [out / recipe.name for recipe in group]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "recipes": [recipe.to_dict() for recipe in group],
        "options": options.to_dict(),
        "folders": [str(folder) for folder in folders],
        "parent": os.getpid(),
    }
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    handle = open(folders[0] / LOG, "a")  # noqa: SIM115 (the worker writes to it until it ends; closed when reaped)
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
    """Train one recipe (or a stacked group) into its folder(s), resuming what was interrupted; the test set
    is not evaluated."""
    recipes = [Recipe.from_dict(values) for values in spec["recipes"]]
    options, folders = SweepOptions.from_dict(spec["options"]), [Path(folder) for folder in spec["folders"]]
    first = recipes[0].train_config
    data = load_data(
        options.data, val_size=first.val_size, seed=first.seed, download=options.download or None, subset=options.subset
    )
    models = [build_model(r.model_config, r.train_config.seed) for r in recipes]
    run = options.run.replace(progress=False)
    if len(recipes) == 1:
        resume = (folders[0] / "last.pt").is_file()
        train_run(models[0], data, recipes[0].train_config, folders[0], run.replace(resume=resume), test=False)
        return
    print(f"{', '.join(r.name for r in recipes)}: stacked, {data.provenance['description']}", flush=True)
    fit_stacked(models, data, [r.train_config for r in recipes], folders, run.replace(resume=True))


def collect_results(recipes: list[Recipe], out: Path) -> list[dict[str, Any]]:
    """One row per recipe: finished ones by validation accuracy (best first), then the unfinished ones (stopped
    before their last epoch, resumable: how far they got), then the failed ones."""
    rows = []
    for recipe in recipes:
        folder = out / recipe.name
        row: dict[str, Any] = {"recipe": recipe.name, **recipe.to_dict(), "folder": str(folder)}
        del row["name"]
        if not (folder / "best.pt").is_file():
            row.update(_unfinished(folder, recipe) or {"status": "failed", "error": _last_line(folder / LOG)})
            rows.append(row)
            continue
        try:
            best = RunRecord.from_dict(load_checkpoint(folder / "best.pt"))
        except (CheckpointError, ValueError, TypeError, KeyError) as error:
            row.update(status="failed", error=f"{shown(folder)}/best.pt is unreadable ({first_line(error, 200)})")
            rows.append(row)
            continue
        if not best.is_run_of(recipe.model_config, recipe.train_config):
            row.update(
                status="failed",
                error=f"{shown(folder)} holds a run of another recipe; move it away to retrain this one",
            )
            rows.append(row)
            continue
        speeds = [e.train_images_per_second or e.images_per_second for e in best.history]
        row.update(
            status="finished",
            best_val_accuracy=best.best_val_accuracy,
            best_epoch=best.best_epoch,
            epochs_run=best.epochs_run,
            stopped_early=best.stopped_early,
            wall_seconds=best.wall_seconds,
            images_per_second=sum(speeds) / len(speeds),
            hardware=best.hardware,
            precision=best.precision,
            provenance=best.provenance,
            history=[entry.to_dict() for entry in best.history],
        )
        rows.append(row)
    order = {"finished": 0, "unfinished": 1, "failed": 2}
    return sorted(rows, key=lambda r: (order[r["status"]], -r.get("best_val_accuracy", 0.0)))


def _unfinished(folder: Path, recipe: Recipe) -> dict[str, Any] | None:
    """How far an interrupted recipe got (from its last.pt), or None when it has no readable last.pt of this
    recipe."""
    try:
        last = RunRecord.from_dict(load_checkpoint(folder / "last.pt"))
    except (OSError, CheckpointError, ValueError, TypeError, KeyError):
        return None
    if not last.is_run_of(recipe.model_config, recipe.train_config) or not last.history:
        return None
    return {
        "status": "unfinished",
        "best_val_accuracy": last.best_val_accuracy,
        "best_epoch": last.best_epoch,
        "epochs_run": last.epochs_run,
        "wall_seconds": last.wall_seconds,
        "error": f"stopped after epoch {last.epochs_run} of {recipe.train_config.epochs}; run the sweep again "
        "to resume",
    }


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def write_results(rows: list[dict[str, Any]], out: Path) -> None:
    """results.json (everything, histories included), results.md (the table) and winner.pt (the best weights;
    removed when no recipe finished, so that an old winner never stands for a new sweep)."""
    write_json(out / RESULTS, {"recipes": rows})
    lines = [
        "| rank | recipe | best val accuracy | best epoch | epochs run | wall time | train images/s | settings |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for rank, row in enumerate(rows, start=1):
        settings = _cell(", ".join(f"{k}={v}" for k, v in row["overrides"].items()) or "(base)")
        if row["status"] == "finished":
            lines.append(
                f"| {rank} | {row['recipe']} | {row['best_val_accuracy']:.4f} | {row['best_epoch']} | "
                f"{row['epochs_run']} | "
                f"{_duration(row['wall_seconds'])} | {row['images_per_second']:,.0f} | {settings} |"
            )
        elif row["status"] == "unfinished":
            lines.append(
                f"| {rank} | {row['recipe']} | {row['best_val_accuracy']:.4f} so far | {row['best_epoch']} | "
                f"{row['epochs_run']} of {row['train_config']['epochs']} (unfinished) | "
                f"{_duration(row['wall_seconds'])} | | {settings} |"
            )
        else:
            lines.append(f"| {rank} | {row['recipe']} | failed: {_cell(row['error'])} | | | | | {settings} |")
    write_text(out / TABLE, "\n".join(lines) + "\n")
    finished = [row for row in rows if row["status"] == "finished"]
    if finished:
        _copy_whole(Path(finished[0]["folder"]) / "best.pt", out / WINNER)
    else:
        (out / WINNER).unlink(missing_ok=True)


def _copy_whole(source: Path, target: Path) -> None:
    """Copy `source` to `target` through a temporary file: a failed copy leaves the old `target` as it was."""
    try:
        reader = open(source, "rb")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise CheckpointError(f"cannot read {shown(source)} ({error.strerror}); train the recipe again") from None
    with reader:
        write_atomically(target, lambda handle: shutil.copyfileobj(reader, handle), error=CheckpointError)


def _cell(text: str) -> str:
    """`text` as one cell of a Markdown table: a pipe would end the cell and a newline the row."""
    return " ".join(text.split()).replace("|", "\\|")


def _watch_parent(parent: int) -> None:
    """End this worker (as SIGTERM would: finished epochs kept) if the sweep that started it is gone, however
    it ended, so that no worker trains on, orphaned."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, daemon=True).start()


def _worker_main(argv: list[str]) -> int:
    """Entry point of a worker process: on failure, the traceback (for whoever reads the log) and then one line
    saying what failed."""
    import traceback

    spec = json.loads(argv[0])
    terminate_as_interrupt()
    _watch_parent(spec["parent"])
    try:
        worker(spec)
    except Interrupted as stop:
        print(f"error: stopped: {first_line(stop)}", flush=True)
        return stop.exit_code
    except KeyboardInterrupt:
        print("error: stopped (the sweep ended); finished epochs are kept in last.pt", flush=True)
        return 130
    except Exception as error:  # noqa: BLE001 (any failure ends this recipe only; the sweep reports it and goes on)
        traceback.print_exc()
        print(f"error: {first_line(error, 240)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
