"""The notebooks are committed as one full top-to-bottom run: the book shows exactly those outputs."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def code_cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def test_every_chapter_in_the_table_of_contents_exists_and_every_notebook_is_listed():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [chapter["file"] for part in toc["parts"] for chapter in part["chapters"]]
    for name in files:
        assert (ROOT / f"{name}.ipynb").is_file() or (ROOT / f"{name}.md").is_file(), name
    assert {f"notebooks/{p.stem}" for p in NOTEBOOKS} <= set(files)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_was_executed_in_order_without_errors(path):
    counts = [cell["execution_count"] for cell in code_cells(path)]
    assert None not in counts, "some cells were never executed"
    assert counts == list(range(counts[0], counts[0] + len(counts))), f"execution counts out of order: {counts}"
    errors = [o for cell in code_cells(path) for o in cell["outputs"] if o["output_type"] == "error"]
    assert not errors, f"stored error output: {errors[0]['ename']}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_name_no_machine_paths_and_are_from_full_mode(path):
    text = path.read_text()
    for marker in ("/work/", "/tmp/", "/root/", "/home/", "C:\\\\Users"):
        assert marker not in text, f"a stored output names a machine path ({marker})"
    streams = "".join("".join(o.get("text", "")) for cell in code_cells(path) for o in cell["outputs"])
    assert "quick mode" not in streams and "quick run:" not in streams, "stored outputs come from quick mode"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_visible_test_markers_and_code_fits_the_column(path):
    for cell in code_cells(path):
        source = "".join(cell["source"])
        assert "NBVAL" not in source, "use the cell tag nbval-check-output, not a comment readers see"
        long = [line for line in source.splitlines() if len(line) > 88]
        assert not long, f"code wider than the book's column (88 characters): {long[0]!r}"


def _shows_something(cell: dict, kinds: tuple[str, ...]) -> bool:
    return cell["cell_type"] == "code" and any(
        (output["output_type"] == "stream" and "text/plain" in kinds)
        or any(kind in output.get("data", {}) for kind in kinds)
        for output in cell["outputs"]
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_what_the_text_points_to_is_there(path):
    """Text that announces a picture ("the figure below", or a paragraph ending in a colon) is followed by
    a cell that shows one; so a figure cannot silently go missing from the page."""
    cells = json.loads(path.read_text())["cells"]
    pictures = ("image/png", "text/html", "image/gif")
    for i, cell in enumerate(cells[:-1]):
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"]).strip()
        after = cells[i + 1]
        if any(phrase in text.lower() for phrase in ("figure below", "picture below", "pictures below")):
            assert _shows_something(after, pictures), f"cell {i} announces a figure that is not there"
        if text.endswith(":") and not text.endswith("::"):
            assert _shows_something(after, (*pictures, "text/plain")), f"cell {i} ends in a colon, then shows nothing"


def test_code_blocks_in_the_prose_fit_the_column_too():
    import re

    texts = {p.name: "".join("".join(c["source"]) for c in json.loads(p.read_text())["cells"]) for p in NOTEBOOKS}
    texts.update({p.name: p.read_text() for p in (ROOT / "book").glob("*.md")})
    for name, text in texts.items():
        for language, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
            wide = [line for line in block.splitlines() if len(line) > 88]
            assert not wide, f"{name}: a {language or 'plain'} code block wider than 88 characters: {wide[0]!r}"
