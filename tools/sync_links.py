"""Write the project's home and version (vit_tutorial/_version.py) everywhere they appear, and the shipped
tables into the README.

    python tools/sync_links.py          # after editing HOME or __version__: the one edit publishing needs
                                        # (and after a new benchmark: it copies the shipped table)

Rewrites the repository URL in _config.yml, pyproject.toml's [project.urls], the README and the book's pages
(replacing whatever URL _config.yml named before), and the first cell of every chapter: the cell that
installs the package, at this version, where a notebook runs outside the checkout (Colab, Binder, a
notebook downloaded on its own). A README block between `<!-- include: PATH -->` and `<!-- /include -->` is
replaced with the file at PATH (the shipped benchmark tables). `tests/test_package.py` fails when any of them
has drifted.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_tutorial._version import HOME, __version__  # noqa: E402

PROSE = ("README.md", "book/intro.md", "book/running.md", "pyproject.toml", "_config.yml")
INSTALL_TAG = "install"


def install_cell_source(version: str = __version__) -> str:
    """The first code cell of every chapter."""
    return (
        "# Outside the book's checkout (Colab, Binder, this file on its own) this installs\n"
        "# the package at the version the book was built with; in the checkout it does nothing.\n"
        "import importlib.util\n"
        "\n"
        'if importlib.util.find_spec("vit_tutorial") is None:\n'
        f"    %pip install --quiet vit-tutorial=={version}\n"
        f'    print("installed vit-tutorial {version}, the version this book was built with")'
    )


def current_home() -> str:
    found = re.search(r"^\s*url:\s*(\S+)", (ROOT / "_config.yml").read_text(), re.M)
    return found.group(1) if found else HOME


def sync_prose(old: str) -> list[str]:
    changed = []
    for name in PROSE:
        path = ROOT / name
        text = path.read_text()
        new = text.replace(old, HOME) if old != HOME else text
        if name == "pyproject.toml":
            new = re.sub(r'(?m)^(Homepage|Repository|Documentation) = ".*"$', lambda m: _url_line(m.group(1)), new)
        if new != text:
            path.write_text(new)
            changed.append(name)
    return changed


INCLUDE = re.compile(r"(<!-- include: (\S+) -->\n)(.*?)(<!-- /include -->)", re.S)


def with_includes(text: str) -> str:
    """`text` with every include block holding the current content of the file it names."""
    return INCLUDE.sub(lambda m: m.group(1) + (ROOT / m.group(2)).read_text() + m.group(4), text)


def sync_includes() -> list[str]:
    path = ROOT / "README.md"
    text = path.read_text()
    new = with_includes(text)
    if new == text:
        return []
    path.write_text(new)
    return ["README.md (included tables)"]


def book_url() -> str:
    """Where GitHub Pages publishes the book of the repository at HOME."""
    owner, repository = HOME.removeprefix("https://github.com/").split("/")[:2]
    return f"https://{owner}.github.io/{repository}"


def _url_line(kind: str) -> str:
    return f'{kind} = "{book_url() if kind == "Documentation" else HOME}"'


def sync_notebooks() -> list[str]:
    changed = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        cells = notebook["cells"]
        index = next(i for i, cell in enumerate(cells) if cell["cell_type"] == "code")
        cell = cells[index]
        source = install_cell_source()
        lines = source.split("\n")
        wanted = [line + "\n" for line in lines[:-1]] + [lines[-1]]
        if INSTALL_TAG in cell.get("metadata", {}).get("tags", []):
            if cell["source"] == wanted:
                continue
            cell["source"] = wanted
        else:
            import uuid

            new = {
                "cell_type": "code",
                "execution_count": None,
                "id": uuid.uuid4().hex[:8],
                "metadata": {"tags": [INSTALL_TAG, "hide-input"]},
                "outputs": [],
                "source": wanted,
            }
            cells.insert(index, new)
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        changed.append(path.name)
    return changed


def main() -> None:
    changed = sync_prose(current_home()) + sync_notebooks() + sync_includes()
    print("updated: " + ", ".join(changed) if changed else f"everything names {HOME} and version {__version__}")


if __name__ == "__main__":
    main()
