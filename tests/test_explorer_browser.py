"""The static explorer in a real headless Chromium: it loads, every control changes the picture,
it draws what the Python overlay computes, and the console stays clean. Also the built book page."""

import shutil
from pathlib import Path

import pytest
import torch

from vit_tutorial import ViT
from vit_tutorial.attention import attention_overlay
from vit_tutorial.explorer import attention_maps, static_explorer_html

from .conftest import TINY, make_split

ROOT = Path(__file__).resolve().parents[1]
BOOK_PAGE = ROOT / "_build" / "html" / "notebooks" / "09_attention_explorer.html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium)"
)

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.problems = []
    page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    yield page
    page.close()


def pixels(page, view: str, nth: int = 0) -> list[int]:
    return page.evaluate(
        """([view, nth]) => {
            const canvas = document.querySelectorAll(`canvas[data-view="${view}"]`)[nth];
            return Array.from(canvas.getContext("2d").getImageData(0, 0, 32, 32).data);
        }""",
        [view, nth],
    )


def change(page, control: str, value: str, nth: int = 0) -> None:
    page.evaluate(
        """([control, value, nth]) => {
            const node = document.querySelectorAll(`[data-control="${control}"]`)[nth];
            node.value = value;
            node.dispatchEvent(new Event(node.tagName === "INPUT" ? "input" : "change"));
        }""",
        [control, value, nth],
    )
    page.wait_for_timeout(100)


def test_static_explorer_page_works_in_chromium(page, tmp_path):
    torch.manual_seed(0)
    model = ViT(TINY).eval()
    split = make_split(40)
    (tmp_path / "explorer.html").write_text(
        f"<!doctype html><html><body>{static_explorer_html(model, split, per_class=2)}</body></html>"
    )
    page.goto((tmp_path / "explorer.html").as_uri())
    page.wait_for_selector(".vit-explorer[data-renders]")

    # what the browser draws equals the Python overlay (first image, last layer, mean of heads, amplify 2)
    first = split.images[0:1].float() / 255
    _, maps = attention_maps(model, first)
    expected = (attention_overlay(first[0], maps[0, TINY.depth - 1, 0], 2.0) * 255).round().permute(1, 2, 0).flatten()
    drawn = torch.tensor(pixels(page, "overlay")).reshape(-1, 4)[:, :3].flatten().float()
    assert (drawn - expected).abs().max() <= 2

    steps = [
        ("layer", "0", "overlay"),
        ("head", "2", "overlay"),
        ("amplify", "4", "overlay"),
        ("opacity", "0.9", "blend"),
        ("colormap", "gray", "blend"),
        ("layer", str(TINY.depth), "overlay"),
        ("image", "3", "image"),
        ("class", "5", "image"),
        ("outcome", "correct", "caption"),
    ]
    for control, value, view in steps:
        before = page.inner_text(".vit-explorer .caption") if view == "caption" else pixels(page, view)
        change(page, control, value)
        after = page.inner_text(".vit-explorer .caption") if view == "caption" else pixels(page, view)
        assert after != before, f"moving {control} to {value} did not change the {view}"
    assert page.is_disabled('[data-control="head"]')  # rollout fuses the heads
    assert page.problems == []


@pytest.mark.skipif(not BOOK_PAGE.is_file(), reason="the book is not built (python3 dev.py book)")
def test_explorer_in_the_built_book(page):
    # The theme loads MathJax from its CDN; machines without internet cannot reach it. Only those
    # failed external loads are forgiven, each one once; every other console error fails the test.
    external = []
    page.on("requestfailed", lambda request: request.url.startswith("http") and external.append(request.url))
    page.goto(BOOK_PAGE.as_uri())
    page.wait_for_selector(".vit-explorer[data-renders]", timeout=20_000)
    for control, value in [("layer", "0"), ("head", "1"), ("amplify", "4.5"), ("image", "7")]:
        before = pixels(page, "overlay")
        change(page, control, value)
        assert pixels(page, "overlay") != before, control
    unexplained = [p for p in page.problems if not p.startswith("Failed to load resource")]
    assert unexplained == [] and len(page.problems) - len(unexplained) <= len(external)
