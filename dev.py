#!/usr/bin/env python3
"""Set-up and checks with nothing but Python. `python3 dev.py COMMAND`:

    test                    everything CI runs: lint, types, the book build, unit tests and notebooks
    lint                    ruff (lint and format check), mypy on the package, actionlint on the workflows
    unit [--fast] [ARGS]    the unit tests (--fast leaves out those marked slow); ARGS go to pytest
    notebooks [CHAPTER ...] every notebook (or the named ones) in quick mode, as CI runs them
    book                    the HTML book into _build/html, from the notebooks' stored outputs
    execute [CHAPTER ...]   re-run chapters in full mode and store their outputs (the data must be set up)
    lab                     JupyterLab on the notebooks

Each creates `.venv/` in the checkout when it is missing and installs the project into it (again only
when pyproject.toml changed), then runs inside it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".vit_tutorial-installed"


def sh(*args: str | Path, **env: str) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    result = subprocess.run([str(a) for a in args], cwd=ROOT, env={**os.environ, **env}, check=False)
    if result.returncode != 0:
        sys.exit(result.returncode)


def ensure_environment() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    sh(PYTHON, "-m", "pip", "install", "--upgrade", "pip")
    sh(PYTHON, "-m", "pip", "install", "-e", ".[book,test,lab]")
    STAMP.write_text(wanted)


def build_book() -> None:
    sh(BIN / "jupyter-book", "build", ".", "-W", "-n", "--keep-going")
    print(f"book: {ROOT / '_build' / 'html' / 'index.html'}")


def lint() -> None:
    sh(BIN / "ruff", "check", ".")
    sh(BIN / "ruff", "format", "--check", ".")
    sh(BIN / "mypy", "vit_tutorial")
    sh(BIN / "actionlint", *sorted((ROOT / ".github" / "workflows").glob("*.yml")))


def notebook_paths(chapters: list[str]) -> list[str]:
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if chapters:
        paths = [p for p in paths if any(p.name.startswith(c) or p.stem == c for c in chapters)]
        if not paths:
            sys.exit(f"no notebook matches {chapters}; name them by number (06) or file name (06_training)")
    return [str(p.relative_to(ROOT)) for p in paths]


PYTEST = ["-m", "pytest", "--nbval-lax", "--nbval-current-env", "--durations=15"]


def run_tests(targets: list[str], extra: list[str]) -> None:
    sh(PYTHON, *PYTEST, *targets, *extra, VIT_TUTORIAL_QUICK="1")


EXECUTE = """
import sys
import nbformat
from nbclient import NotebookClient

path = sys.argv[1]
notebook = nbformat.read(path, as_version=4)
client = NotebookClient(
    notebook,
    timeout=7200,
    kernel_name="python3",
    store_widget_state=False,
    resources={"metadata": {"path": "notebooks"}},
)
client.execute()
notebook.metadata.pop("widgets", None)  # the live widgets need a kernel: the book shows no widget state
nbformat.write(notebook, path)
"""


def execute(chapters: list[str]) -> None:
    """Run chapters top to bottom in full mode and store their outputs (all of them when none are named)."""
    import time

    for path in notebook_paths(chapters):
        print(f"executing {path} in full mode", flush=True)
        started = time.perf_counter()
        sh(PYTHON, "-c", EXECUTE, path, VIT_TUTORIAL_QUICK="0", VIT_TUTORIAL_BOOK="1")
        print(f"{path}: {time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    command, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    commands = ("test", "lint", "unit", "notebooks", "book", "execute", "lab")
    if command not in commands:
        sys.exit(__doc__)
    ensure_environment()
    if command == "book":
        build_book()
    elif command == "lint":
        lint()
    elif command == "unit":
        fast = ["-m", "not slow"] if "--fast" in rest else []
        run_tests(["tests"], fast + [a for a in rest if a != "--fast"])
    elif command == "notebooks":
        run_tests(notebook_paths(rest), [])
    elif command == "execute":
        execute(rest)
    elif command == "lab":
        sh(BIN / "jupyter", "lab", "notebooks")
    else:
        lint()
        build_book()
        run_tests(["tests", *notebook_paths([])], rest)


if __name__ == "__main__":
    main()
