#!/usr/bin/env python3
"""Set-up and checks with nothing but Python: `python3 dev.py test`, `book` or `execute [chapter ...]`.

Each creates `.venv/` in the checkout when it is missing and installs the project into it (again only
when pyproject.toml changed), then runs inside it. `test` lints (ruff), builds the book, and runs the
unit tests and every notebook in quick mode; `book` builds the HTML book; `execute` re-runs chapters in
full mode (the data must be where the package looks for it) and stores their outputs for the book.
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
    sh(PYTHON, "-m", "pip", "install", "-e", ".[book,test]")
    STAMP.write_text(wanted)


def build_book() -> None:
    sh(BIN / "jupyter-book", "build", ".", "-W", "-n", "--keep-going")
    print(f"book: {ROOT / '_build' / 'html' / 'index.html'}")


def lint() -> None:
    sh(BIN / "ruff", "check", ".")
    sh(BIN / "ruff", "format", "--check", ".")


def run_tests(extra: list[str]) -> None:
    notebooks = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb"))
    pytest = [PYTHON, "-m", "pytest", "tests", *notebooks, "--nbval-lax", "--nbval-current-env", "--durations=15"]
    sh(*pytest, *extra, VIT_TUTORIAL_QUICK="1")


EXECUTE = """
import sys
import nbformat
from nbclient import NotebookClient

path = sys.argv[1]
notebook = nbformat.read(path, as_version=4)
NotebookClient(notebook, timeout=3600, kernel_name="python3", resources={"metadata": {"path": "notebooks"}}).execute()
nbformat.write(notebook, path)
"""


def execute(chapters: list[str]) -> None:
    """Run chapters top to bottom in full mode and store their outputs (all of them when none are named)."""
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if chapters:
        paths = [p for p in paths if any(p.name.startswith(c) or p.stem == c for c in chapters)]
        if not paths:
            sys.exit(f"no notebook matches {chapters}; name them by number (06) or file name (06_training)")
    for path in paths:
        print(f"executing {path.relative_to(ROOT)} in full mode", flush=True)
        sh(PYTHON, "-c", EXECUTE, path.relative_to(ROOT), VIT_TUTORIAL_QUICK="0")


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in ("test", "book", "execute"):
        sys.exit(
            "usage: python3 dev.py test [pytest options] | python3 dev.py book | python3 dev.py execute [chapter ...]"
        )
    ensure_environment()
    if command == "book":
        build_book()
    elif command == "execute":
        execute(sys.argv[2:])
    else:
        lint()
        build_book()
        run_tests(sys.argv[2:])


if __name__ == "__main__":
    main()
