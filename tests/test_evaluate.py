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
