import json

import pytest
import torch

from vit_tutorial import ViT
from vit_tutorial.evaluate import classification_report, confusion_matrix, evaluate, save_metrics

from .conftest import TINY, make_split


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 0]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_report_matches_hand_computed_precision_recall_f1():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 0, 1, 1, 2, 2])
    report = classification_report(labels, predictions, ("a", "b", "c"))
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert report["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert report["per_class"]["c"]["recall"] == pytest.approx(1.0)


def test_evaluate_writes_json(tmp_path):
    metrics = evaluate(ViT(TINY), make_split(30))
    assert metrics["num_images"] == 30 and len(metrics["confusion_matrix"]) == 10
    path = save_metrics(metrics, tmp_path / "out" / "metrics.json")
    assert json.loads(path.read_text())["accuracy"] == metrics["accuracy"]


def test_flop_count_matches_the_hand_count_for_a_linear_model():
    from torch import nn

    from vit_tutorial.evaluate import count_flops, inference_throughput

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    assert count_flops(model) == 2 * 3 * 32 * 32 * 10
    assert inference_throughput(model, torch.randn(20, 3, 32, 32), batch_size=10) > 0


def test_flop_count_of_the_vit_includes_attention_products():
    from vit_tutorial import ViT, ViTConfig
    from vit_tutorial.evaluate import count_flops

    config = ViTConfig()
    t, d, m, h = config.num_tokens, config.dim, config.mlp_dim, config.heads
    per_block = t * d * 3 * d + 2 * h * t * t * (d // h) + t * d * d + 2 * t * d * m
    macs = config.num_patches * config.patch_dim * d + config.depth * per_block + d * config.num_classes
    assert count_flops(ViT(config)) == 2 * macs == 82_780_672


def test_test_time_views_are_the_image_mirrored_and_shifted_by_four_pixels():
    from vit_tutorial.evaluate import TTA_SHIFT, tta_views

    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    views = tta_views(images)
    assert len(views) == 6 and all(v.shape == images.shape for v in views)
    plain, down_right, up_left = views[:3]
    s = TTA_SHIFT
    assert torch.equal(plain, images)
    assert torch.equal(down_right[..., s:, s:], images[..., :-s, :-s])  # content moved down and right
    assert torch.equal(up_left[..., :-s, :-s], images[..., s:, s:])  # and up and left
    for shifted, mirrored in zip(views[:3], views[3:]):
        assert torch.equal(mirrored, shifted.flip(-1))


def test_tta_scores_the_mean_of_the_views_logits():
    from vit_tutorial.data import normalise
    from vit_tutorial.evaluate import predict_logits, tta_views

    torch.manual_seed(0)
    model = ViT(TINY).eval()
    split = make_split(10)
    averaged = predict_logits(model, split, tta=True)
    with torch.no_grad():
        expected = torch.stack([model(v) for v in tta_views(normalise(split.images))]).mean(0)
    torch.testing.assert_close(averaged, expected)
    assert evaluate(model, split, tta=True)["tta"] is True and evaluate(model, split)["tta"] is False
