"""Training throughput of the card's ViT (or the ResNet-18 baseline): images/s and projected epoch time, eager vs compiled.

Runs the real training step of `vit_tutorial.train` (augmentation, autocast, clipping, scheduler) on
synthetic uint8 images held where training holds them, after warm-up steps, and prints the hardware.

    python benchmarks/train_throughput.py                 # eager, and compiled where CUDA is present
    python benchmarks/train_throughput.py --steps 10      # shorter (CPU)
    python benchmarks/train_throughput.py --model resnet  # the CNN baseline of chapter 10
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from vit_tutorial import ResNetConfig, TrainConfig, ViTConfig
from vit_tutorial.data import Split
from vit_tutorial.train import _train_epoch, build_model, compile_for, describe_hardware, make_optimizer, select_device

TRAIN_IMAGES = 45_000  # one epoch of the real recipe


MODELS = {"vit": ViTConfig, "resnet": ResNetConfig}


def measure(path: str, device: torch.device, config: TrainConfig, steps: int, warmup: int, model_name: str = "vit") -> dict:
    model = build_model(MODELS[model_name](), seed=0).to(device)
    forward = compile_for(model, device) if path == "compiled" else model
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (config.batch_size * steps, 3, 32, 32), dtype=torch.uint8, generator=generator, device=device)
    labels = torch.randint(0, 10, (config.batch_size * steps,), generator=generator, device=device)
    split = Split(images, labels)
    warm = Split(images[: config.batch_size * warmup], labels[: config.batch_size * warmup])
    started = time.perf_counter()
    _train_epoch(forward, warm, optimizer, scheduler, config, device, generator, None)
    warmup_seconds = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    _, _, seen = _train_epoch(forward, split, optimizer, scheduler, config, device, generator, None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "model": model_name,
        "path": path,
        "batch_size": config.batch_size,
        "images_per_second": round(seen / seconds, 1),
        "ms_per_step": round(1000 * seconds / steps, 2),
        "projected_epoch_seconds": round(TRAIN_IMAGES / (seen / seconds), 2),
        "warmup_seconds": round(warmup_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", choices=sorted(MODELS), default="vit")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--augment", default="flip-crop-cutout", help="augmentation in the timed loop")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    device = select_device(args.device)
    config = TrainConfig(batch_size=args.batch_size, augment=args.augment)
    print(f"hardware: {describe_hardware(device)}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads; python {platform.python_version()}")
    paths = ["eager", "compiled"] if device.type == "cuda" else ["eager"]
    results = []
    for path in paths:
        result = measure(path, device, config, args.steps, args.warmup, args.model)
        results.append(result)
        print(f"{args.model} {path:>9}: {result['images_per_second']:>10,.0f} images/s  {result['ms_per_step']:>8.2f} ms/step  "
              f"epoch of {TRAIN_IMAGES:,} images ~ {result['projected_epoch_seconds']:.1f} s  (warm-up {result['warmup_seconds']} s)")  # fmt: skip
    if device.type != "cuda":
        print("compiled: skipped, torch.compile is used on CUDA only")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"hardware": describe_hardware(device), "torch": torch.__version__, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
