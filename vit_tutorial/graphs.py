"""Training a small model fast on a GPU: the step as one CUDA graph, the next epoch prepared meanwhile.

The card's model is small, so on a GPU an eager step is hundreds of tiny kernel launches, most of the
time spent by the CPU issuing them. `GraphedStep` records a `train.TrainStep` once as a CUDA graph and
replays it per batch: one launch per step. A graph has static shapes and addresses: the batch is copied
into the tensors it was recorded with, the trainer drops the last partial batch, and the optimiser is
fused or capturable, with its learning rate a device tensor that the schedule fills in place.

Augmentation runs outside the graph (each operation only on the images that drew it, so its shapes
depend on the draw). `epochs` therefore prepares the next epoch's batches on a side stream while the
current epoch's replays run (`Prefetcher`, used by `train.fit`), so that the GPU does both at once and
the step waits for nothing.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable

import torch

from .errors import first_line


class GraphedStep:
    """A step (`train.TrainStep` or `stacked.StackedStep`: tensors in, sums on the device) captured as a CUDA
    graph after `WARMUP_STEPS` eager steps on a side stream (as the CUDA-graph documentation asks), then
    replayed. If the capture fails, it warns and runs eagerly."""

    WARMUP_STEPS = 3

    def __init__(self, step) -> None:
        self.step = step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, ...] = ()
        self.calls = 0
        self.failed = False

    def __call__(self, *batch: torch.Tensor) -> None:
        if self.failed:
            self.step(*batch)
            return
        if self.calls < self.WARMUP_STEPS:
            self.calls += 1
            self._on_side_stream(*batch)
            return
        if self.graph is None:
            self._capture(*batch)
            if self.graph is None:  # the capture failed: this step runs eagerly
                self.step(*batch)
                return
        for static, value in zip(self.static, batch):
            static.copy_(value)
        self.graph.replay()

    def reset(self) -> None:
        self.step.reset()

    def totals(self, images: int, steps: int):
        return self.step.totals(images, steps)

    def _on_side_stream(self, *batch: torch.Tensor) -> None:
        device = self.step.device
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            self.step(*batch)
        torch.cuda.current_stream(device).wait_stream(stream)

    def _capture(self, *batch: torch.Tensor) -> None:
        self.static = tuple(t.clone() for t in batch)
        self.step.zero_grad()  # the gradients are then allocated inside the graph's memory
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                self.step(*self.static)  # recorded, not run: the replay that follows runs it
        except RuntimeError as error:  # an operation that cannot be captured: train on without the graph
            warnings.warn(f"CUDA graph capture failed ({first_line(error, 200)}); training on without it", stacklevel=2)
            self.graph, self.failed = None, True
            torch.cuda.synchronize(self.step.device)


class Prefetcher:
    """Prepares an epoch's batches ahead of time: `make(epoch)` gives them, and on CUDA they are made on a side
    stream, so that the GPU prepares one epoch while it trains on the other. Elsewhere they are made in turn,
    which changes nothing but the order of work: each epoch's batches are seeded by its number alone."""

    def __init__(self, device: torch.device, make: Callable[[int], Iterable], epochs: int) -> None:
        self.device, self.make, self.epochs = device, make, epochs
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        if self.stream is not None:  # the data must be on the device before the side stream reads it
            self.stream.wait_stream(torch.cuda.current_stream(device))
        self.ready: dict[int, list] = {}

    def prepare(self, epoch: int) -> None:
        if epoch in self.ready or epoch >= self.epochs:
            return
        context = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with context:
            self.ready[epoch] = list(self.make(epoch))

    def take(self, epoch: int) -> list:
        self.prepare(epoch)
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return self.ready.pop(epoch)
