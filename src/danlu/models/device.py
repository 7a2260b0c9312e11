"""Device and dtype choice: cuda when available, else cpu; bf16 only where it is fast."""

from __future__ import annotations

import os

import torch

from danlu.utils.errors import UsageError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(spec: str = "auto") -> torch.device:
    """`auto` -> this process's GPU if one is visible (CUDA_VISIBLE_DEVICES applies; under a
    launcher, GPU LOCAL_RANK, so eight ranks do not all load onto GPU 0), else cpu."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK") or 0))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        quiet_deepspeed()
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(
            f"device: unknown device {spec!r} (auto, cpu, cuda, cuda:N, mps)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device: {spec!r} asked for but no CUDA GPU is visible")
        if device.index is not None and device.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise UsageError(f"device: {spec!r} asked for but only {n} GPU(s) are visible")
    if device.type == "cpu":
        quiet_deepspeed()
    return device


def quiet_deepspeed() -> None:
    """DeepSpeed (imported by accelerate and transformers whenever it is installed) warns on
    every CPU-only import that it found no GPU; in a process that runs on the CPU, say so first."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


def pick_dtype(spec: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on GPUs with bf16 support, float16 on older GPUs, float32 on CPU.

    On CPU the weights stay float32 and training uses bf16 autocast where the CPU supports it,
    which keeps master weights exact (the training engine decides that, not the loader).
    """
    if spec != "auto":
        return _DTYPES[spec]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
