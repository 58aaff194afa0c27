"""Training throughput of the card's ViT (or the ResNet-18 baseline): whole epochs and single steps, eager vs compiled.

"epoch" runs the trainer's own epoch loop (`vit_tutorial.train._train_epoch`: shuffling, augmentation,
normalisation, random erasing, mixup / cutmix, forward, backward, clipping, optimiser, EMA, schedule) over
synthetic uint8 images held where training holds them. "step" repeats one training step on a fixed batch:
the model's cost alone. "compiled" is what `train --compile` does: `torch.compile` and, on CUDA, the whole
step captured in a CUDA graph. Compilation and capture happen in untimed warm-up work. Prints the hardware.

    python benchmarks/train_throughput.py                          # CUDA: eager and compiled, batch 256 and 1024
    python benchmarks/train_throughput.py --images 2560            # CPU: a shorter epoch
    python benchmarks/train_throughput.py --augment flip-crop --mixup 0 --cutmix 0 --random-erasing 0 --ema 0
    python benchmarks/train_throughput.py --model resnet           # the CNN baseline of chapter 10
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from vit_tutorial import TrainConfig
from vit_tutorial.data import Split
from vit_tutorial.registry import FROM_SCRATCH, build_model, spec_named
from vit_tutorial.train import (
    EMA,
    TrainStep,
    _train_epoch,
    compile_for,
    describe_hardware,
    make_optimizer,
    make_scheduler,
    select_device,
)

TRAIN_IMAGES = 45_000  # one epoch of the real recipe


def make_step(path: str, device: torch.device, config: TrainConfig, model_name: str) -> TrainStep:
    model = build_model(spec_named(model_name).config_class(), seed=0).to(device)
    graph = path == "compiled" and device.type == "cuda"
    forward = compile_for(model, device) if path == "compiled" else model
    ema = EMA(model, config.ema) if config.ema > 0 else None
    return TrainStep(model, forward, make_optimizer(model, config, capturable=graph), config, device, ema, graph=graph)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_epoch(path: str, device: torch.device, config: TrainConfig, images: int, model_name: str) -> dict:
    step = make_step(path, device, config, model_name)
    generator = torch.Generator(device=device).manual_seed(0)
    data = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator, device=device)
    split = Split(data, torch.randint(0, 10, (images,), generator=generator, device=device))
    scheduler = make_scheduler(step.optimizer, config, steps_per_epoch=images // config.batch_size)
    warm = Split(split.images[: config.batch_size * 6], split.labels[: config.batch_size * 6])
    started = time.perf_counter()
    _train_epoch(step, warm, config, device, generator, None, scheduler)  # compiles and captures
    warmup_seconds = time.perf_counter() - started
    synchronize(device)
    started = time.perf_counter()
    _, _, seen = _train_epoch(step, split, config, device, generator, None, scheduler)
    synchronize(device)
    seconds = time.perf_counter() - started
    return _row(path, "epoch", config, seen, seconds, seen // config.batch_size, warmup_seconds)


def measure_step(path: str, device: torch.device, config: TrainConfig, steps: int, model_name: str) -> dict:
    step = make_step(path, device, config, model_name)
    step.model.train()
    images = torch.randn(config.batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (config.batch_size,), device=device)
    started = time.perf_counter()
    for _ in range(TrainStep.WARMUP_STEPS + 2):
        step(images, labels, labels)
    synchronize(device)
    warmup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step(images, labels, labels)
    synchronize(device)
    seconds = time.perf_counter() - started
    return _row(path, "step", config, steps * config.batch_size, seconds, steps, warmup_seconds)


def _row(path, what, config, seen, seconds, steps, warmup_seconds) -> dict:
    return {
        "path": path,
        "measures": what,
        "batch_size": config.batch_size,
        "images_per_second": round(seen / seconds, 1),
        "ms_per_step": round(1000 * seconds / max(steps, 1), 2),
        "projected_epoch_seconds": round(TRAIN_IMAGES / (seen / seconds), 2),
        "warmup_seconds": round(warmup_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", choices=FROM_SCRATCH, default="vit")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default: 256 1024 on CUDA, 256 elsewhere")
    parser.add_argument(
        "--images", type=int, default=TRAIN_IMAGES, help="images in the timed epoch (default: %(default)s)"
    )
    parser.add_argument("--steps", type=int, default=50, help="timed steps of the step-only measurement")
    parser.add_argument("--augment", default="trivialaugment", help="augmentation in the epoch (default: %(default)s)")
    parser.add_argument("--mixup", type=float, default=0.8)
    parser.add_argument("--cutmix", type=float, default=1.0)
    parser.add_argument("--random-erasing", type=float, default=0.25)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    device = select_device(args.device)
    paths = ["eager", "compiled"] if device.type == "cuda" else ["eager"]
    batch_sizes = args.batch_sizes or ([256, 1024] if device.type == "cuda" else [256])
    recipe = {
        "augment": args.augment,
        "mixup": args.mixup,
        "cutmix": args.cutmix,
        "random_erasing": args.random_erasing,
        "ema": args.ema,
    }
    hardware = describe_hardware(device)
    print(
        f"hardware: {hardware}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads; "
        f"python {platform.python_version()}"
    )
    print(f"model: {args.model}; epoch of {args.images:,} synthetic images; recipe {recipe}")
    results = []
    for batch_size in batch_sizes:
        config = TrainConfig(batch_size=batch_size, **recipe)
        for path in paths:
            for row in (
                measure_epoch(path, device, config, args.images, args.model),
                measure_step(path, device, config, args.steps, args.model),
            ):
                results.append(row)
                print(
                    f"{path:>9} {row['measures']:>5} batch {batch_size:>5}: "
                    f"{row['images_per_second']:>10,.0f} images/s {row['ms_per_step']:>8.2f} ms/step  "
                    f"epoch of {TRAIN_IMAGES:,} ~ {row['projected_epoch_seconds']:.1f} s "
                    f"(warm-up {row['warmup_seconds']} s)",
                    flush=True,
                )
    if device.type != "cuda":
        print("compiled: skipped, torch.compile is used on CUDA only")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "hardware": hardware,
                    "torch": torch.__version__,
                    "model": args.model,
                    "recipe": recipe,
                    "results": results,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
