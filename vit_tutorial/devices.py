"""Where a model runs and in which number format: device choice, bfloat16 where the hardware has it.

bfloat16 keeps float32's range with 8 bits of mantissa: matrix products run in it under autocast, while
losses, norms and the optimiser stay in float32. It pays where the hardware multiplies bfloat16 natively:
NVIDIA GPUs since Ampere, and CPUs with AVX-512 BF16 or AMX. Elsewhere it is emulated and slower than
float32, so `precision="auto"` picks it only where it is native.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Literal

import torch

from .config import RunOptions

Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")


def select_device(preferred: str | torch.device | None = None) -> torch.device:
    """`preferred` if given (and not 'auto'), else CUDA, then MPS, then CPU.

    Raises:
        ValueError: an unknown device name, or a device this machine does not have.
    """
    if preferred in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preferred)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {preferred!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {preferred!r} is not supported; use cpu, cuda, cuda:N, mps or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preferred!r} was asked for but CUDA is not available; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {preferred!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"device {preferred!r} was asked for but MPS is not available; use --device cpu or auto")
    return device


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def describe_hardware(device: torch.device) -> str:
    """What a record says ran it: the GPU's name, or the CPU's model, cores and whether it has bfloat16."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    if device.type != "cpu":
        return f"{platform.machine()} machine ({device.type})"
    bf16 = "native bfloat16" if native_bf16(device) else "no native bfloat16"
    return f"{_cpu_model()}, {os.cpu_count()} cores, {bf16} (cpu)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or f"{platform.machine()} CPU"


def native_bf16(device: torch.device) -> bool:
    """True when `device` multiplies bfloat16 in hardware: a CUDA GPU that supports it, or a CPU with
    AVX-512 BF16 or AMX tiles."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, check, lambda: False)() for check in checks)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "bf16" or "fp32": what `precision` ("auto", "bf16" or "fp32") means on `device`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and device.type == "mps":
        raise ValueError("bf16 autocast is not supported on MPS here; use --precision fp32 or auto")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on `device` for a resolved `precision` ("bf16" or "fp32").

    On CUDA the cast cache is off, because a captured CUDA graph cannot use it. On the CPU, attention goes
    through the math kernel of `scaled_dot_product_attention`: at 17 tokens the fused CPU kernel's bfloat16
    backward is many times slower than the plain matrix products.
    """
    if precision != "bf16":
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
    stack.enter_context(sdpa_kernel(SDPBackend.MATH))
    return stack


def device_for(options: RunOptions, local_rank: int | None = None) -> tuple[torch.device, str]:
    """The device and number format `options` ask for, with the CPU threads they set; on several processes
    (`local_rank`, see `distributed`), each takes its own GPU."""
    if options.threads:
        torch.set_num_threads(options.threads)
    device = select_device(options.device)
    if local_rank is not None and device.type == "cuda":
        device = torch.device("cuda", local_rank)
    return device, resolve_precision(options.precision, device)
