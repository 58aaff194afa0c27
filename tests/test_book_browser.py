"""The built book in a real headless Chromium, at a phone's width and a laptop's: every figure keeps the shape
it was drawn with (a figure squashed by the column is a defect a reader sees on every page)."""

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "_build" / "html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium)"),
    pytest.mark.skipif(not (BOOK / "index.html").is_file(), reason="the book is not built (python3 dev.py book)"),
]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
ARGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = sorted(p.relative_to(BOOK).as_posix() for p in (BOOK / "notebooks").glob("*.html"))
PAGES += [p.relative_to(BOOK).as_posix() for p in (BOOK / "book").glob("*.html")]


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


SHAPES = """() => Array.from(document.querySelectorAll("article img")).filter(img => img.naturalWidth > 40)
    .map(img => ({src: img.getAttribute("src"), natural: img.naturalWidth / img.naturalHeight,
                  shown: img.getBoundingClientRect().width / img.getBoundingClientRect().height,
                  width: img.getBoundingClientRect().width, column: img.closest("article").clientWidth}))"""


@pytest.mark.parametrize("width", [390, 1280])
def test_every_figure_keeps_its_shape_and_fits_the_column(browser, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    wrong = []
    try:
        for name in PAGES:
            page.goto((BOOK / name).as_uri())
            page.wait_for_load_state("load")
            for figure in page.evaluate(SHAPES):
                if abs(figure["shown"] / figure["natural"] - 1) > 0.02 or figure["width"] > figure["column"] + 1:
                    wrong.append(
                        f"{name}: {figure['src']} shown at {figure['shown']:.2f}, drawn {figure['natural']:.2f}"
                    )
    finally:
        page.close()
    assert not wrong, "\n".join(wrong[:20])
