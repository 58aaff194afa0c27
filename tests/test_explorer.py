import copy
import io

import pytest
import torch
from PIL import Image

from vit_tutorial import ViT
from vit_tutorial.attention_maps import attention_rollout, cls_attention
from vit_tutorial.data import normalise
from vit_tutorial.explorer import (
    MEAN_HEAD,
    AttentionExplorer,
    attention_maps,
    explorer_data,
    select_examples,
    static_explorer_html,
)

from .conftest import TINY, make_split


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ViT(TINY).eval()


def test_attention_maps_hold_every_layer_head_and_rollout(model):
    images = torch.rand(2, 3, 32, 32)
    probabilities, maps = attention_maps(model, images)
    assert probabilities.shape == (2, 10) and maps.shape == (2, TINY.depth + 1, TINY.heads + 1, 4, 4)
    _, attentions = model(normalise(images), return_attention=True)
    torch.testing.assert_close(maps[:, 0, 0], cls_attention(attentions, 0))
    torch.testing.assert_close(maps[:, 1, 2], cls_attention(attentions, 1, head=1))
    torch.testing.assert_close(maps[:, -1, 0], attention_rollout(attentions))


def test_select_examples_takes_per_class():
    labels = make_split(100).labels
    chosen = select_examples(labels, per_class=3)
    assert len(chosen) == 30 and [labels[i].item() for i in chosen[:3]] == [0, 0, 0]


def _pictures(explorer):
    return tuple(view.value for view in explorer.views)


def test_live_explorer_builds_and_every_control_changes_the_view(model):
    explorer = AttentionExplorer(model, make_split(40))
    assert explorer.caption.value.startswith("test image 0")
    before = _pictures(explorer)
    for control, value in [
        (explorer.layer, 0),
        (explorer.head, 1),
        (explorer.amplify, 4.0),
        (explorer.opacity, 1.0),
        (explorer.cmap, "gray"),
        (explorer.scale, "shared"),
        (explorer.layer, "rollout"),
        (explorer.index, 5),
    ]:
        control.value = value
        assert _pictures(explorer) != before, control.description
        before = _pictures(explorer)
    explorer.class_filter.value = "cat"
    assert "a cat" in explorer.caption.value
    explorer.class_filter.value = "airplane"
    assert "an airplane" in explorer.caption.value
    explorer.class_filter.value = "all classes"
    labels = explorer.split.labels
    for outcome, expected in (("wrong", explorer.predictions != labels), ("correct", explorer.predictions == labels)):
        explorer.outcome_filter.value = outcome
        assert explorer.candidates() == expected.nonzero().flatten().tolist()
        if expected.any():
            shown = explorer.candidates()[explorer.index.value]
            assert explorer.caption.value.startswith(f"test image {shown},")
            assert f"({int(expected.sum())} images match the filters)" in explorer.caption.value


def test_live_explorer_controls_say_what_they_show(model):
    explorer = AttentionExplorer(model, make_split(40))
    explorer.head.value = 1
    explorer.head.value = MEAN_HEAD  # the mean keeps its label (a value of None would blank the dropdown)
    assert explorer.head.label == "mean" and explorer.head.index == 0
    explorer.layer.value = "rollout"
    assert explorer.head.disabled  # rollout fuses the heads
    explorer.layer.value = 0
    assert not explorer.head.disabled
    assert [t.value for t in explorer.titles[:2]] == ["<center>image</center>", explorer.titles[1].value]
    assert "spread" in explorer.scale_text.value and explorer.colorbar.value
    dead = copy.deepcopy(model)
    with torch.no_grad():  # a flat layer is said to be flat, on either scale
        dead.blocks[0].attn.qkv.weight.zero_()
        dead.blocks[0].attn.qkv.bias.zero_()
    flat = AttentionExplorer(dead, make_split(10))
    flat.layer.value = 0
    assert "(flat)" in flat.titles[1].value and "min-max stretches noise" in flat.scale_text.value
    flat.scale.value = "shared"
    assert "shared scale shows it even" in flat.scale_text.value


def _png(colour, size=(300, 200)):
    buffer = io.BytesIO()
    Image.new("RGBA", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_live_explorer_takes_an_uploaded_image_twice_and_a_failed_one_leaves_no_picture(model):
    explorer = AttentionExplorer(model, make_split(20))
    drop = explorer.upload
    drop.png, drop.name, drop.count = _png((200, 30, 30, 255)), "photo.png", 1
    assert explorer.caption.value == "your image 1: photo.png" and explorer.image.shape == (3, 32, 32)
    assert "images match" not in explorer.caption.value and all(_pictures(explorer))
    explorer.index.value = 3
    drop.count = 2  # the same file again: a new upload
    assert explorer.caption.value == "your image 2: photo.png"
    drop.png, drop.name, drop.count = b"hello", "notes.txt", 3
    assert "not an image" in explorer.caption.value and not any(_pictures(explorer))
    assert not explorer.prediction.value
    drop.error = "huge.png is 60.0 MB; images up to 50 MB are read"  # refused in the browser
    assert "up to 50 MB" in explorer.caption.value and not any(_pictures(explorer))
    drop.error, drop.png, drop.name, drop.count = "", _png((0, 0, 200, 255)), "blue.png", 4
    assert explorer.caption.value == "your image 4: blue.png" and all(_pictures(explorer))


def test_the_image_drop_scales_photos_down_in_the_browser():
    from vit_tutorial.explorer import image_drop

    drop = image_drop()
    script = drop._esm
    assert "createImageBitmap" in script and "limit_mb" in script and 'input.value = ""' in script
    assert drop.limit_mb == 50 and drop.side == 256


def test_static_explorer_is_self_contained(model):
    split = make_split(30)
    html = static_explorer_html(model, split, per_class=2)
    assert "http" not in html and "<script src" not in html
    data = explorer_data(model, split, [0, 11])
    assert len(data["images"]) == 2 and data["layers"][-1] == "rollout"
    maps = data["images"][1]["maps"]
    assert len(maps) == TINY.depth + 1 and len(maps[0]) == TINY.heads + 1 and len(maps[0][0]) == 16


def test_the_browser_runs_only_the_books_vit(tmp_path):
    from vit_tutorial import ResNet
    from vit_tutorial.browser import write_browser_weights

    with pytest.raises(TypeError, match="the browser runs the book's ViT"):
        write_browser_weights(ResNet(), tmp_path / "w.js")
