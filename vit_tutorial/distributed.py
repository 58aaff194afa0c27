"""One run on several processes: PyTorch's DistributedDataParallel, started by `torchrun`.

    torchrun --nproc_per_node 4 -m vit_tutorial train ...     # four GPUs (NCCL), or four CPU processes (gloo)

`torchrun` starts the processes and sets RANK, WORLD_SIZE and LOCAL_RANK; `launched` reads them. Each process
(a rank) builds the same model, joins the process group (`join`), and trains on its share of every batch:
the whole batch is drawn and augmented as a single process would, then cut into equal shards (`shard`), so
the run sees the same images as it would alone, and `TrainConfig.batch_size` stays the batch of one
optimiser step. DDP averages the gradients over the ranks during the backward pass, so every rank takes the
same step and keeps the same weights; the epoch's loss and accuracy sums are added over the ranks
(`add_over_ranks`). Every rank validates (the same weights give the same figures, so every rank makes the
same early-stopping decision); only rank 0 writes the run folder and prints. A rank that dies makes
`torchrun` stop the others, which end as on SIGTERM, keeping the finished epochs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Ranks:
    """This process's place among the run's processes."""

    rank: int
    world: int
    local_rank: int  # its index on this machine: the GPU it takes

    @property
    def leader(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0


def launched() -> Ranks | None:
    """The ranks `torchrun` set, or None for a process started alone (or as the only one)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2 or "RANK" not in os.environ:
        return None
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def device_of(ranks: Ranks, device: torch.device) -> torch.device:
    """The device of this rank: its own GPU (by local rank) where the run is on CUDA."""
    return torch.device("cuda", ranks.local_rank) if device.type == "cuda" else device


def join(device: torch.device, timeout_minutes: int = 10) -> None:
    """Join the run's process group: NCCL between GPUs, gloo between CPU processes."""
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))


def wrap(forward: nn.Module, device: torch.device) -> nn.Module:
    """`forward` (the model, or its compiled form) wrapped so that the backward pass averages the gradients of its
    parameters over the ranks; it shares them with the model."""
    return DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)


def shard(batch: tuple[torch.Tensor, ...], ranks: Ranks) -> tuple[torch.Tensor, ...]:
    """This rank's equal share of every tensor of a batch (cut along the batch axis)."""
    return tuple(tensor.chunk(ranks.world)[ranks.rank] for tensor in batch)


def add_over_ranks(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its sum over the ranks, in place."""
    for tensor in tensors:
        dist.all_reduce(tensor)


def wait_for_all() -> None:
    """Continue when every rank has got here."""
    dist.barrier()


def peer_lost(error: RuntimeError) -> bool:
    """Whether `error` is a collective operation failing because another rank has gone (killed, or stopped by its
    own error): the process group is up, and the message is the backend's about a lost connection."""
    text = str(error).lower()
    lost = ("connection reset", "connection closed", "broken pipe", "socket", "timed out", "nccl", "gloo")
    return dist.is_initialized() and any(word in text for word in lost)
