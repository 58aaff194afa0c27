"""Device choice and number formats: bfloat16 where the hardware has it, and a bf16 step that tracks fp32."""

import pytest
import torch
import torch.nn.functional as F

from vit_tutorial import TrainConfig
from vit_tutorial.data import normalise
from vit_tutorial.devices import autocast, native_bf16, resolve_precision, select_device
from vit_tutorial.optim import make_optimizer
from vit_tutorial.registry import build_model

from .conftest import TINY, make_split


def test_device_selection_falls_back_to_cpu():
    assert select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert select_device().type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


def test_auto_precision_is_bf16_only_where_it_is_native():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", cpu)


def test_bf16_autocast_runs_the_products_in_bf16_and_attention_through_the_math_kernel():
    model = build_model(TINY).eval()
    images = normalise(make_split(4).images)
    with autocast(torch.device("cpu"), "bf16"):
        logits, _ = model(images, return_attention=True)
        plain = model(images)
    assert logits.dtype == torch.bfloat16 and plain.dtype == torch.bfloat16
    assert torch.allclose(logits.float(), plain.float(), atol=0.05)  # explicit and fused paths agree in bf16 too
    with autocast(torch.device("cpu"), "fp32"):
        assert model(images).dtype == torch.float32


def test_a_bf16_cpu_step_tracks_the_fp32_step():
    """Along 30 steps of an fp32 run, the bf16 step taken from the same weights gives nearly the same loss and
    gradient. bf16 keeps 8 significant bits (a rounding of 2^-9, 0.2%, per product), while sums, the loss
    and the optimiser stay in fp32; so the loss may differ by well under 1% and the gradient must point the
    same way (cosine above 0.99). Comparing whole bf16 and fp32 runs instead would measure chaos: two runs
    that differ by any rounding drift apart after a few dozen steps, as two fp32 runs with different thread
    counts do."""
    model = build_model(TINY.replace(dim=64, depth=4, heads=4, mlp_dim=128), seed=0).train()
    optimizer = make_optimizer(model, TrainConfig(lr=0.05, warmup_epochs=0))
    split = make_split(32 * 30, seed=1)
    images, labels = normalise(split.images), split.labels
    cpu = torch.device("cpu")
    first_fp32 = last_fp32 = None
    for step in range(30):
        batch = slice(32 * step, 32 * (step + 1))
        results = {}
        for precision in ("bf16", "fp32"):  # fp32 last: its gradient is the one the optimiser uses
            optimizer.zero_grad()
            with autocast(cpu, precision):
                logits = model(images[batch])
            loss = F.cross_entropy(logits.float(), labels[batch], label_smoothing=0.1)
            loss.backward()
            grad = torch.cat([p.grad.flatten() for p in model.parameters()])
            results[precision] = (loss.item(), grad)
        (bf16_loss, bf16_grad), (fp32_loss, fp32_grad) = results["bf16"], results["fp32"]
        assert abs(bf16_loss - fp32_loss) < 0.01 * fp32_loss, (step, bf16_loss, fp32_loss)
        assert F.cosine_similarity(bf16_grad, fp32_grad, dim=0) > 0.99, step
        optimizer.step()
        first_fp32 = fp32_loss if first_fp32 is None else first_fp32
        last_fp32 = fp32_loss
    assert last_fp32 < first_fp32  # the run learns, so the steps compared are real training steps
