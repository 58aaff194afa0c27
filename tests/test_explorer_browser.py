"""The static explorer in a real headless Chromium: it loads, every control changes the picture,
it draws what the Python overlay computes, and the console stays clean. Also the built book page."""

import shutil
from pathlib import Path

import pytest
import torch

from vit_tutorial import ViT
from vit_tutorial.attention_maps import attention_overlay
from vit_tutorial.data import CLASSES
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


def test_static_explorer_opens_on_the_image_and_layer_asked_for(page, tmp_path):
    torch.manual_seed(0)
    model = ViT(TINY).eval()
    split = make_split(40)
    with pytest.raises(ValueError, match="start_image must be in"):
        static_explorer_html(model, split, per_class=2, start_image=20)
    html = static_explorer_html(model, split, per_class=2, start_image=3, start_layer=1)
    (tmp_path / "explorer.html").write_text(f"<!doctype html><html><body>{html}</body></html>")
    page.goto((tmp_path / "explorer.html").as_uri())
    page.wait_for_selector(".vit-explorer[data-renders]")
    assert page.eval_on_selector('[data-control="image"]', "node => node.value") == "3"
    assert page.eval_on_selector('[data-control="layer"]', "node => node.value") == "1"
    assert page.problems == []


@pytest.mark.skipif(not BOOK_PAGE.is_file(), reason="the book is not built (python3 dev.py book)")
def test_explorer_in_the_built_book(page):
    # The theme loads MathJax from its CDN; machines without internet cannot reach it. Only those
    # failed external loads are forgiven, each one once; every other console error fails the test.
    external = []
    page.on("requestfailed", lambda request: request.url.startswith("http") and external.append(request.url))
    page.goto(BOOK_PAGE.as_uri())
    page.wait_for_selector(".vit-explorer[data-renders]", timeout=20_000)
    opened_on = page.eval_on_selector('[data-control="layer"]', "node => node.value")
    other_layer = "11" if opened_on == "0" else "0"  # the page opens on the most uneven layer, whichever it is
    for control, value in [("layer", other_layer), ("head", "1"), ("amplify", "4.5"), ("image", "7")]:
        before = pixels(page, "overlay")
        change(page, control, value)
        assert pixels(page, "overlay") != before, control
    unexplained = [p for p in page.problems if not p.startswith("Failed to load resource")]
    assert unexplained == [] and len(page.problems) - len(unexplained) <= len(external)


@pytest.mark.skipif(not BOOK_PAGE.is_file(), reason="the book is not built (python3 dev.py book)")
def test_the_built_book_classifies_a_readers_image(page, tmp_path):
    from PIL import Image

    assert (BOOK_PAGE.parent.parent / "_static" / "vit-weights.js").is_file(), "the build wrote no weights"
    page.goto(BOOK_PAGE.as_uri())
    page.wait_for_selector(".vit-explorer[data-renders]", timeout=20_000)
    picture = Image.new("RGB", (300, 200), (30, 90, 200))
    picture.paste((240, 240, 240), (100, 60, 200, 140))
    picture.save(tmp_path / "photo.png")
    page.set_input_files('[data-control="upload"]', str(tmp_path / "photo.png"))
    page.wait_for_function("document.querySelector('.vit-explorer .caption').textContent.includes('your image')")
    status = page.inner_text(".vit-explorer .status")
    assert "loaded the model" in status and "classified it in" in status


def _model_page(tmp_path, model, split):
    from vit_tutorial.browser import WEIGHTS_SCRIPT, write_browser_weights

    write_browser_weights(model, tmp_path / "static" / WEIGHTS_SCRIPT)
    html = static_explorer_html(model, split, per_class=1, weights_url=f"static/{WEIGHTS_SCRIPT}")
    (tmp_path / "explorer.html").write_text(f"<!doctype html><html><body>{html}</body></html>")
    return (tmp_path / "explorer.html").as_uri()


@pytest.fixture(scope="module")
def book_model():
    """The shipped model when there is one (the real shapes), else an untrained full-size ViT."""
    from vit_tutorial import ViTConfig, load_pretrained, pretrained_available

    torch.manual_seed(0)
    return load_pretrained() if pretrained_available() else ViT(ViTConfig()).eval()


def test_the_browser_model_equals_pytorch(page, tmp_path, book_model, capsys):
    from vit_tutorial.browser import half_precision
    from vit_tutorial.data import normalise

    split = make_split(20)
    noise = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    images = torch.cat([split.images[:3], noise])
    page.goto(_model_page(tmp_path, book_model, split))
    page.wait_for_selector(".vit-explorer[data-renders]")
    reference = half_precision(book_model)
    with torch.no_grad():
        logits, attentions = reference(normalise(images), return_attention=True)
    timings = []
    for k, image in enumerate(images):
        result = page.evaluate(
            """async (rgb) => {
                const data = new ImageData(32, 32);
                for (let p = 0; p < 1024; p++) { data.data.set([rgb[3*p], rgb[3*p+1], rgb[3*p+2], 255], 4*p); }
                const started = performance.now();
                const out = await window.vitTutorial.classify(data);
                return {probabilities: Array.from(out.probabilities), attentions: Array.from(out.attentions),
                        shape: out.shape, forward: out.milliseconds, total: performance.now() - started};
            }""",
            image.permute(1, 2, 0).flatten().tolist(),
        )
        assert result["shape"] == list(attentions.shape[1:])
        probabilities = torch.tensor(result["probabilities"])
        assert (probabilities - logits[k].softmax(-1)).abs().max() < 1e-3, k
        assert (torch.tensor(result["attentions"]).reshape(attentions.shape[1:]) - attentions[k]).abs().max() < 1e-3, k
        timings.append((result["forward"], result["total"]))
    with capsys.disabled():
        print(
            f"\nbrowser ViT: first classify {timings[0][1]:.0f} ms (loading the weights included); "
            f"then {sorted(t[0] for t in timings[1:])[len(timings) // 2 - 1]:.0f} ms per image (median)"
        )
    assert page.problems == []


def test_an_uploaded_image_is_classified_and_a_non_image_is_refused(page, tmp_path, book_model):
    from PIL import Image

    from vit_tutorial.browser import half_precision
    from vit_tutorial.data import normalise

    split = make_split(20)
    page.goto(_model_page(tmp_path, book_model, split))
    page.wait_for_selector(".vit-explorer[data-renders]")
    image = split.images[7]
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "mine.png")
    page.set_input_files('[data-control="upload"]', str(tmp_path / "mine.png"))
    page.wait_for_function("document.querySelector('[data-control=\"image\"]').value === 'upload:0'")
    page.wait_for_function("document.querySelector('.vit-explorer .caption').textContent.includes('your image')")
    with torch.no_grad():
        expected = half_precision(book_model)(normalise(image[None])).softmax(-1)[0]
    name, percent = page.evaluate(
        """() => { const cells = document.querySelectorAll('.vit-explorer .prediction tr:nth-child(2) td');
                   return [cells[0].textContent, parseFloat(cells[2].textContent)]; }"""
    )
    best = int(expected.argmax())
    assert name == CLASSES[best]
    assert abs(percent - 100 * expected[best].item()) < 0.06
    for control, value in [("layer", "0"), ("head", "2"), ("layer", str(book_model.config.depth))]:
        before = pixels(page, "overlay")
        change(page, control, value)
        assert pixels(page, "overlay") != before or control == "head", control

    (tmp_path / "notes.txt").write_text("not a picture")
    page.set_input_files('[data-control="upload"]', str(tmp_path / "notes.txt"))
    page.wait_for_selector(".vit-explorer .status.problem")
    assert "not an image" in page.inner_text(".vit-explorer .status")
    assert page.problems == []


def test_flat_maps_are_marked_and_the_shared_scale_shows_them_flat(page, tmp_path):
    import copy

    torch.manual_seed(0)
    model = ViT(TINY).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[: 2 * TINY.dim] *= 40  # sharp attention everywhere ...
        model.blocks[0].attn.qkv.weight.zero_()  # ... but in layer 1, which attends evenly
        model.blocks[0].attn.qkv.bias.zero_()
    split = make_split(20)
    html = static_explorer_html(copy.deepcopy(model), split, per_class=1, inline_weights=True, start_layer=0)
    (tmp_path / "flat.html").write_text(f"<!doctype html><html><body>{html}</body></html>")
    page.goto((tmp_path / "flat.html").as_uri())
    page.wait_for_selector(".vit-explorer[data-renders]")
    assert page.evaluate("document.querySelector('.vit-explorer').classList.contains('flat')")
    assert "min-max stretches what is noise" in page.inner_text(".vit-explorer .scale")
    stretched = pixels(page, "overlay")
    change(page, "scale", "shared")
    assert "shared scale shows it even" in page.inner_text(".vit-explorer .scale")
    even = pixels(page, "overlay")
    assert even != stretched
    change(page, "layer", "1")
    assert not page.evaluate("document.querySelector('.vit-explorer').classList.contains('flat')")
    # the weights came with the page: a reader's image is classified without any weights file
    from PIL import Image

    Image.new("RGB", (64, 48), (200, 40, 40)).save(tmp_path / "red.png")
    page.set_input_files('[data-control="upload"]', str(tmp_path / "red.png"))
    page.wait_for_function(
        "document.querySelector('.vit-explorer .caption').textContent.includes('your image (1: red.png)')"
    )
    page.set_input_files('[data-control="upload"]', str(tmp_path / "red.png"))  # the same file again
    page.wait_for_function("document.querySelector('.vit-explorer .caption').textContent.includes('(2: red.png)')")
    # no image matches: nothing of the last one stays on screen
    change(page, "class", "3")
    change(page, "outcome", "correct")
    if "No image" in page.inner_text(".vit-explorer .caption"):
        assert set(pixels(page, "overlay")) == {0} and page.inner_text(".vit-explorer .prediction") == ""
    assert page.problems == []


def test_a_paste_elsewhere_on_the_page_is_not_the_explorers(page, tmp_path):
    torch.manual_seed(0)
    model = ViT(TINY).eval()
    html = static_explorer_html(model, make_split(20), per_class=1, inline_weights=True)
    spacer = "<textarea id=t></textarea><div style='height:900px'></div>"
    page.set_content(f"<!doctype html><html><body>{spacer}{html}</body></html>")
    page.wait_for_selector(".vit-explorer[data-renders]")
    page.focus("#t")
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array([137, 80, 78, 71])], "x.png", {type: "image/png"}));
            const paste = new ClipboardEvent("paste", {clipboardData: data, bubbles: true});
            document.querySelector("#t").dispatchEvent(paste);
        }"""
    )
    page.wait_for_timeout(300)
    assert page.inner_text(".vit-explorer .status") == ""  # the paste went to the text box, not the explorer
