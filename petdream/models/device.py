"""Which device and dtype the models run on."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` takes CUDA, then Apple's MPS, then the CPU; anything else is taken as asked, if this
    machine has it (RuntimeError saying what it has otherwise)."""
    if requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} was asked for, but this machine has no CUDA GPU")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise RuntimeError(f"device {requested!r} was asked for, but this machine's CUDA GPUs are "
                               f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"device {requested!r} was asked for, but this machine has no Apple MPS device")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """`auto`: float16 on accelerators (half the memory, tensor cores), float32 on the CPU,
    where half precision is slow and some kernels lack it."""
    if requested != "auto":
        return getattr(torch, requested)
    return torch.float32 if device.type == "cpu" else torch.float16


def release_host_memory() -> None:
    """Hand the memory a finished job freed back to the system. glibc keeps freed heap for reuse, so
    without this a long-running app stays at the peak of its last training; a no-op off glibc."""
    gc.collect()  # the models and optimizer, where reference cycles (hooks, closures) still hold them
    libc = ctypes.util.find_library("c")
    malloc_trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if malloc_trim is not None:
        malloc_trim(0)
