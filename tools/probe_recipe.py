"""The training campaign's probe: one peak learning rate, trained briefly without clipping, recording the
unclipped gradient norms of every step (global and per parameter group) and the validation accuracy of
every epoch.

The schedule is a short warmup-stable-decay (`--warmup-epochs`, then constant, then `--cooldown-epochs` of
1 - sqrt decay), so that rates are compared after a cooldown, as the campaign's milestones are, and not
at a constant rate, where a larger rate always looks worse for its noise. Run it once per rate (one
thread each, side by side on a 2-core machine), then read the gradient-norm percentiles off the chosen
rate's file to set the clipping threshold (fewer than 5% of steps clipped):

    python tools/probe_recipe.py --lr 0.03 --threads 1 --json probes/lr_0.03.json
    python tools/probe_recipe.py --summary probes/lr_*.json       # the table the closing note quotes

The data come from the package's data root (`VIT_TUTORIAL_DATA`); the recipe is the campaign's
(`RECIPE`), with `--weight-decay` and `--decay-scope` to vary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from vit_tutorial import TrainConfig, ViTConfig
from vit_tutorial.data import load_data
from vit_tutorial.devices import describe_hardware, resolve_precision, select_device
from vit_tutorial.parameters import query_key_weights
from vit_tutorial.registry import build_model
from vit_tutorial.run_state import Run
from vit_tutorial.train import TrainStep, epoch_batches, run_epoch

RECIPE = dict(
    batch_size=128,
    momentum=0.9,
    nesterov=True,
    decay_scope="blocks",
    augment="trivialaugment",
    label_smoothing=0.1,
    schedule="constant",
    grad_clip=0.0,  # the probe measures the norms clipping would see
    ema=0.0,  # the live weights: a short probe's average would lag behind them
    patience=0,
)
PERCENTILES = (50, 90, 95, 99)


def parameter_group(name: str) -> str:
    """Where a parameter sits, for the per-group norms (the fused query/key/value matrix is split by rows)."""
    if name.startswith("patch_embed."):
        return "patch embedding"
    if name in ("cls_token", "pos_embed"):
        return "CLS token and positions"
    if name.startswith("head."):
        return "head"
    if "norm" in name:
        return "norms"
    if ".attn.proj." in name:
        return "attention output"
    if ".mlp." in name:
        return "MLP"
    return "other"


class ProbedStep(TrainStep):
    """A `TrainStep` that records the gradient norms before the update (the probe does not clip)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups: dict[str, list[torch.Tensor]] = {}
        qkv = {id(weight): d for weight, d in query_key_weights(self.model)}
        self.rows: list[tuple[torch.Tensor, int]] = []
        for name, param in self.model.named_parameters():
            if id(param) in qkv:
                self.rows.append((param, qkv[id(param)]))
            elif name.endswith("attn.qkv.bias"):
                self.groups.setdefault("query/key/value biases", []).append(param)
            else:
                self.groups.setdefault(parameter_group(name), []).append(param)
        self.norms: list[dict[str, float]] = []

    @torch.no_grad()
    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        squares = {
            group: sum(float(p.grad.float().pow(2).sum()) for p in params if p.grad is not None)
            for group, params in self.groups.items()
        }
        for part, rows in (("query", slice(0, 1)), ("key", slice(1, 2)), ("value", slice(2, 3))):
            squares[part] = sum(
                float(w.grad[rows.start * d : rows.stop * d].float().pow(2).sum())
                for w, d in self.rows
                if w.grad is not None
            )
        step = {group: total**0.5 for group, total in squares.items()}
        step["global"] = sum(squares.values()) ** 0.5
        step["lr"] = float(self.optimizer.param_groups[0]["lr"])
        self.norms.append(step)
        super().update(loss, logits, labels)


def probe(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(
        **RECIPE,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        cooldown_epochs=args.cooldown_epochs,
        epochs=args.epochs,
        seed=args.seed,
    ).replace(decay_scope=args.decay_scope)
    data = load_data(subset=args.subset, seed=config.seed, val_size=config.val_size)
    device = select_device("cpu")
    model = build_model(ViTConfig(), config.seed)
    run = Run(model, data, config, device=device, precision=resolve_precision("auto", device))
    run.start(None, resume=False)
    step = ProbedStep.of(run)
    history = []
    for epoch in range(config.epochs):
        (entry,) = run_epoch([run], step, epoch, epoch_batches(run, epoch), progress=False)
        history.append(
            {k: getattr(entry, k) for k in ("epoch", "lr", "train_loss", "train_accuracy", "val_accuracy")}
            | {"train_clean_accuracy": entry.train_clean_accuracy, "images_per_second": entry.images_per_second}
        )
        print(json.dumps(history[-1]), flush=True)
    return {
        "recipe": config.to_dict(),
        "hardware": describe_hardware(device),
        "threads": torch.get_num_threads(),
        "precision": run.precision,
        "data": data.provenance.get("description"),
        "steps_per_epoch": run.steps_per_epoch,
        "history": history,
        "gradient_norms": step.norms,
    }


def percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {f"p{p}": cuts[p - 1] for p in PERCENTILES} | {"max": max(values)}


def summary(paths: list[Path]) -> None:
    print("| lr | val acc by epoch | global norm p50 / p90 / p95 / p99 / max (after warmup) | largest group at p95 |")
    print("| --- | --- | --- | --- | --- |")
    for path in paths:
        result = json.loads(path.read_text())
        warmup = result["recipe"]["warmup_epochs"] * result["steps_per_epoch"]
        after = result["gradient_norms"][warmup:] or result["gradient_norms"]
        cuts = percentiles([s["global"] for s in after])
        groups = {g: percentiles([s[g] for s in after])["p95"] for g in after[0] if g not in ("global", "lr")}
        largest = max(groups, key=groups.__getitem__)
        accuracies = " / ".join(f"{e['val_accuracy']:.3f}" for e in result["history"])
        print(
            f"| {result['recipe']['lr']} | {accuracies} | "
            f"{' / '.join(f'{v:.2f}' for v in cuts.values())} | {largest} {groups[largest]:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--weight-decay", type=float, default=3e-5)
    parser.add_argument("--decay-scope", default="blocks")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--cooldown-epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, default=None, help="train on this many images (a quick check)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the probe's figures here")
    parser.add_argument("--summary", type=Path, nargs="+", help="print the table of finished probes and stop")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        return
    result = probe(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result))
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
