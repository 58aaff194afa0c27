"""Training and inference speed of the card's ViT, measured side by side in one run, on this machine.

Every comparison is interleaved (A, B, A, B, ...) and reports the median of its repeats, so that a noisy,
shared machine slows both sides alike. What it measures, on any device:

- number format: one training step and inference (batch 64 and 1024) in float32 and in bfloat16 autocast;
- a whole epoch (`train.train_epoch` over `train.epoch_batches`: shuffling, the augmentation pipeline,
  forward, backward, clipping, optimiser, EMA, schedule) against the step alone on a fixed batch;
- `--parallel N`: N recipes trained as one stacked model (`vit_tutorial.stacked`), images/s summed over them;
- on the CPU, threads: one training step at batch 64, 128 and 256, float32 and bfloat16, with one thread
  and with every core, interleaved (`--only threads` measures just that, for a machine paused for it), and
  which to use per batch;

and on CUDA also eager against compiled (`train --compile`: `torch.compile`, the whole step one CUDA graph,
the next epoch prepared on a side stream), at batch 256, 512 and 1024. It prints the hardware and writes
JSON and a Markdown table, after every comparison (the README includes the shipped CPU table).

    python benchmarks/train_throughput.py --json vit_tutorial/pretrained/cpu_benchmark.json  # 10 min, 2 cores
    python benchmarks/train_throughput.py --json $OUT/benchmark.json --parallel 6            # on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vit_tutorial import TrainConfig, ViTConfig
from vit_tutorial.data import CIFAR10, Split
from vit_tutorial.devices import autocast, describe_hardware, native_bf16, select_device
from vit_tutorial.graphs import GraphedStep, Prefetcher
from vit_tutorial.registry import build_model
from vit_tutorial.run_state import Run
from vit_tutorial.train import TrainStep, epoch_batches, train_epoch

TRAIN_IMAGES = 45_000  # one epoch of the real recipe
RECIPE = {"augment": "trivialaugment", "mixup": 0.8, "cutmix": 1.0, "random_erasing": 0.25, "ema": 0.999}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(candidates: dict[str, Callable[[], None]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each candidate, timed in turns (one warm-up call each, untimed)."""
    for run in candidates.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            synchronize(device)
            started = time.perf_counter()
            run()
            synchronize(device)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def synthetic_data(images: int, device: torch.device) -> CIFAR10:
    generator = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (images + 1000, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (images + 1000,), generator=generator)
    train, val = Split(data[:images], labels[:images]), Split(data[images:], labels[images:])
    return CIFAR10(train, val, val, {"source": "synthetic", "description": "synthetic uint8 images"})


def make_run(config: TrainConfig, data: CIFAR10, device: torch.device, precision: str, compiled: bool) -> Run:
    model = build_model(ViTConfig(), seed=0)
    run = Run(model, data, config, device=device, precision=precision, compile=compiled)
    run.start(None, resume=False)
    return run


def step_of(run: Run):
    """The run's step, replayed as one CUDA graph where the run was compiled on CUDA (as `train.fit` does)."""
    step = TrainStep.of(run)
    return GraphedStep(step) if run.graph else step


def number_formats(device: torch.device, batch: int, repeats: int) -> list[dict[str, Any]]:
    """A training step and inference, float32 against bfloat16 autocast (on the CPU also bfloat16 with the fused
    attention kernel, which `devices.autocast` avoids)."""
    data = synthetic_data(batch * 2, device)
    config = TrainConfig(batch_size=batch, augment="none")
    forms = ["fp32", "bf16"] + (["bf16, fused attention"] if device.type == "cpu" else [])

    def context(form: str):
        if form == "bf16, fused attention":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return autocast(device, form)

    steps = {}
    for form in forms:
        run = make_run(config, data, device, "fp32", compiled=False)
        step = TrainStep.of(run)
        images = torch.randn(batch, 3, 32, 32, device=device)
        labels = torch.randint(0, 10, (batch,), device=device)
        run.model.train()

        def one(step=step, images=images, labels=labels, form=form) -> None:
            with context(form):
                step(images, labels, labels)

        steps[form] = one
    seconds = interleaved(steps, repeats, device)
    rows = [_row("train step", f, batch, batch / v, 1000 * v, seconds["fp32"] / v) for f, v in seconds.items()]
    model = build_model(ViTConfig(), seed=0).to(device).eval()
    for size in (64, 1024):
        images = torch.randn(size, 3, 32, 32, device=device)

        def infer(form: str, images=images) -> None:
            with torch.no_grad(), context(form):
                model(images)

        seconds = interleaved({f: (lambda f=f: infer(f)) for f in ("fp32", "bf16")}, repeats, device)
        rows += [_row("inference", f, size, size / v, 1000 * v, seconds["fp32"] / v) for f, v in seconds.items()]
    return rows


def cpu_threads(batches: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    """One training step at each batch size, float32 and bfloat16, with one thread and with every core,
    timed in turns: which of the four to use."""
    device, cores = torch.device("cpu"), torch.get_num_threads()
    rows = []
    for batch in batches:
        data = synthetic_data(batch * 2, device)
        config = TrainConfig(batch_size=batch, augment="none")
        candidates = {}
        for precision in ("fp32", "bf16") if native_bf16(device) else ("fp32",):
            run = make_run(config, data, device, "fp32", compiled=False)
            run.model.train()
            step = TrainStep.of(run)
            images = torch.randn(batch, 3, 32, 32)
            labels = torch.randint(0, 10, (batch,))
            for threads in sorted({1, cores}):

                def one(step=step, images=images, labels=labels, precision=precision, threads=threads) -> None:
                    torch.set_num_threads(threads)
                    with autocast(device, precision):
                        step(images, labels, labels)

                candidates[f"{precision}, {threads} thread{'s' if threads > 1 else ''}"] = one
        seconds = interleaved(candidates, repeats, device)
        first = next(iter(seconds.values()))
        rows += [_row("train step, threads", f, batch, batch / v, 1000 * v, first / v) for f, v in seconds.items()]
    torch.set_num_threads(cores)
    return rows


def epoch_and_step(
    device: torch.device, batch: int, images: int, precision: str, compiled: bool, repeats: int
) -> list[dict[str, Any]]:
    """A whole epoch with the heaviest recipe of the grids against the step alone, as `fit` runs them."""
    data = synthetic_data(images, device)
    config = TrainConfig(batch_size=batch, epochs=10_000, warmup_epochs=0, **RECIPE)
    run = make_run(config, data, device, precision, compiled)
    step = step_of(run)
    path = "compiled" if compiled else "eager"
    prefetcher = None
    if compiled and device.type == "cuda":
        prefetcher = Prefetcher(device, lambda epoch: epoch_batches(run, epoch), config.epochs)
    epoch = iter(range(10_000))
    run.model.train()

    def whole_epoch() -> None:
        e = next(epoch)
        if prefetcher is None:
            train_epoch(step, epoch_batches(run, e), run.scheduler)
        else:
            train_epoch(step, prefetcher.take(e), run.scheduler, meanwhile=lambda: prefetcher.prepare(e + 1))

    fixed = next(epoch_batches(run, 0))

    def steps_alone() -> None:
        for _ in range(run.steps_per_epoch):
            step(*fixed)

    seconds = interleaved({"epoch": whole_epoch, "step alone": steps_alone}, repeats, device)
    seen = run.images_per_epoch
    label = f"{path}, {precision}"
    return [
        _row(what, label, batch, seen / value, 1000 * value / run.steps_per_epoch, seconds["step alone"] / value)
        for what, value in seconds.items()
    ]


def stacked(
    device: torch.device, batch: int, parallel: int, images: int, precision: str, compiled: bool, repeats: int
) -> list[dict[str, Any]]:
    """`parallel` recipes as one stacked model against one recipe alone: images/s summed over the recipes."""
    from vit_tutorial.stacked import StackedStep, stacked_batches

    data = synthetic_data(images, device)
    config = TrainConfig(batch_size=batch, epochs=10_000, warmup_epochs=0, augment="trivialaugment")
    graph = compiled and device.type == "cuda"
    rows = []
    times = {}
    counts = {}
    for recipes in (1, parallel):
        runs = [
            make_run(config.replace(lr=0.05 * (1 + i / 10)), data, device, precision, compiled) for i in range(recipes)
        ]
        for run in runs:
            run.model.train()
        stacked_step: Any = StackedStep(runs)
        if graph:
            stacked_step = GraphedStep(stacked_step)
        fixed = next(stacked_batches(runs, 0))

        def steps(stacked_step=stacked_step, fixed=fixed, per_epoch=runs[0].steps_per_epoch) -> None:
            for _ in range(per_epoch):
                stacked_step(*fixed)

        times[f"{recipes} stacked"] = steps
        counts[f"{recipes} stacked"] = recipes * runs[0].images_per_epoch
        per_pass = runs[0].steps_per_epoch
    seconds = interleaved(times, repeats, device)
    single = counts["1 stacked"] / seconds["1 stacked"]
    for name, value in seconds.items():
        rate = counts[name] / value
        rows.append(_row("stacked step, summed", name, batch, rate, 1000 * value / per_pass, rate / single))
    return rows


def _row(what: str, form: str, batch: int, images_per_second: float, ms: float, ratio: float) -> dict[str, Any]:
    return {
        "measures": what,
        "form": form,
        "batch": batch,
        "images_per_second": round(images_per_second, 1),
        "ms": round(ms, 2),
        "speed_ratio": round(ratio, 3),
    }


def _share_the_machine():
    """Run as a background job that shares the machine: this process at the lowest priority, and another one
    spinning on a core at normal priority (returned, to be killed when done)."""
    import os
    import subprocess
    import sys

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # at this process's priority
    os.nice(19)  # then this one drops to the lowest
    return spinner


def markdown(results: dict[str, Any]) -> str:
    """The table of one run, as the README shows it."""
    conditions = f", {results['conditions']}" if "conditions" in results else ""
    lines = [
        f"{results['hardware']}, torch {results['torch']}, {results['threads']} threads, {results['date']}{conditions}",
        "",
        "| what | form | batch | images/s | ms per batch | speed vs. the first form |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['measures']} | {row['form']} | {row['batch']:,} | {row['images_per_second']:,.0f} | "
            f"{row['ms']:,.1f} | {row['speed_ratio']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, help="images in a timed epoch (default: 45,000 on CUDA, 2,560 else)")
    parser.add_argument("--repeats", type=int, default=5, help="timed turns of each comparison (default: 5)")
    parser.add_argument("--parallel", type=int, default=4, help="recipes in the stacked measurement (default: 4)")
    parser.add_argument("--json", type=Path, help="write the results here, and the table beside it (.md)")
    parser.add_argument("--only", choices=("threads",), help="measure only this part")
    parser.add_argument(
        "--busy",
        action="store_true",
        help="measure as a background run that shares the machine: at nice 19, while another process keeps one core "
        "busy at normal priority",
    )
    args = parser.parse_args()
    spinner = _share_the_machine() if args.busy else None
    device = select_device(args.device)
    cuda = device.type == "cuda"
    images = args.images or (TRAIN_IMAGES if cuda else 2560)
    results: dict[str, Any] = {
        "hardware": describe_hardware(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "native_bf16": native_bf16(device),
        "date": time.strftime("%Y-%m-%d"),
        "conditions": "nice 19, one core kept busy by another process" if args.busy else "nothing else running",
        "images_per_epoch": images,
        "recipe": RECIPE,
        "rows": [],
    }
    print(
        f"hardware: {results['hardware']}; bf16 native: {results['native_bf16']}; torch {torch.__version__}; "
        f"{results['threads']} threads; python {results['python']}",
        flush=True,
    )

    def add(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            results["rows"].append(row)
            print(
                f"{row['measures']:>22} {row['form']:>14} batch {row['batch']:>5}: {row['images_per_second']:>11,.0f}"
                f" images/s {row['ms']:>9.2f} ms  {row['speed_ratio']:.2f}x",
                flush=True,
            )
        if args.json:  # after every comparison, so that a run stopped by a time limit keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
            args.json.with_suffix(".md").write_text(markdown(results))

    if device.type == "cpu":
        add(cpu_threads((64, 128, 256), args.repeats))
    if args.only == "threads":
        if spinner is not None:
            spinner.kill()
        return
    add(number_formats(device, 256, args.repeats))
    precision = "bf16" if native_bf16(device) else "fp32"
    add(stacked(device, 512 if cuda else 64, args.parallel, images, precision, cuda, max(2, args.repeats // 2)))
    for batch in (512, 1024, 256) if cuda else (256,):
        add(epoch_and_step(device, batch, images, precision, compiled=False, repeats=max(2, args.repeats // 2)))
        if cuda:
            add(epoch_and_step(device, batch, images, precision, compiled=True, repeats=max(2, args.repeats // 2)))
    if args.json:
        print(f"wrote {args.json} and {args.json.with_suffix('.md')}")


if __name__ == "__main__":
    main()
