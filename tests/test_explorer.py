import io

import pytest
import torch
from PIL import Image

from vit_tutorial import ViT
from vit_tutorial.attention import attention_rollout, cls_attention
from vit_tutorial.data import normalize
from vit_tutorial.explorer import (
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
    _, attentions = model(normalize(images), return_attention=True)
    torch.testing.assert_close(maps[:, 0, 0], cls_attention(attentions, 0))
    torch.testing.assert_close(maps[:, 1, 2], cls_attention(attentions, 1, head=1))
    torch.testing.assert_close(maps[:, -1, 0], attention_rollout(attentions))


def test_select_examples_takes_per_class():
    labels = make_split(100).labels
    chosen = select_examples(labels, per_class=3)
    assert len(chosen) == 30 and [labels[i].item() for i in chosen[:3]] == [0, 0, 0]


def test_live_explorer_builds_and_every_control_changes_the_view(model):
    explorer = AttentionExplorer(model, make_split(40))
    assert explorer.caption.value.startswith("test image 0")
    before = explorer.view.value
    for control, value in [
        (explorer.layer, 0),
        (explorer.head, 1),
        (explorer.amplify, 4.0),
        (explorer.opacity, 1.0),
        (explorer.cmap, "gray"),
        (explorer.layer, "rollout"),
        (explorer.index, 5),
    ]:
        control.value = value
        assert explorer.view.value != before, control.description
        before = explorer.view.value
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


def test_live_explorer_takes_an_uploaded_image_and_rejects_a_non_image(model):
    explorer = AttentionExplorer(model, make_split(20))
    buffer = io.BytesIO()
    Image.new("RGBA", (300, 200), (200, 30, 30, 255)).save(buffer, format="PNG")
    explorer._pick_upload({"new": [{"name": "photo.png", "content": memoryview(buffer.getvalue())}]})
    assert explorer.caption.value.startswith("your image") and explorer.image.shape == (3, 32, 32)
    explorer._pick_upload({"new": [{"name": "notes.txt", "content": memoryview(b"hello")}]})
    assert "not an image" in explorer.caption.value


def test_static_explorer_is_self_contained(model):
    split = make_split(30)
    html = static_explorer_html(model, split, per_class=2)
    assert "http" not in html and "<script src" not in html
    data = explorer_data(model, split, [0, 11])
    assert len(data["images"]) == 2 and data["layers"][-1] == "rollout"
    maps = data["images"][1]["maps"]
    assert len(maps) == TINY.depth + 1 and len(maps[0]) == TINY.heads + 1 and len(maps[0][0]) == 16
