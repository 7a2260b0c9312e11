"""The memory estimator in front of a run (issue: "will it fit?" before a GPU-hour is spent).

Before the model is loaded, `preflight` estimates the per-device peak of the configured run
(danlu.plan) and compares it with the device's memory: it warns when the run will not fit, or,
with `auto_batch_size`, lowers the micro-batch to the largest that fits and raises accumulation
so the global batch stays the same. If training still runs out of memory, `oom_message` turns
the failure into one line with what to change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

HEADROOM = 0.9
"""Fraction of device memory a run may plan to use (allocator fragmentation, other processes)."""


def device_memory(device: str) -> float | None:
    """Bytes a run can use: total memory of the CUDA device, or available RAM on CPU."""
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.mem_get_info()[1])
    if device == "cpu":
        import psutil

        return float(psutil.virtual_memory().available)
    return None


PeakAt = Callable[[int | None], float]
"""Estimated peak bytes per device at a micro-batch (None: the configured one)."""


def peak_function(cfg: Any, device: str) -> PeakAt:
    """The estimator for `cfg`, with the architecture read once (a folder's config.json or a
    GGUF header) however many micro-batches are then tried."""
    from danlu.plan import Setup, estimate, load_arch
    from danlu.plan.fromconfig import setup_from_config

    model, fields = setup_from_config(cfg)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    fields.update(device=kind, autocast=cfg.bf16 or cfg.fp16)
    if kind == "cpu" and cfg.model_dtype == "auto" and cfg.quantization_bit is None:
        fields["weights"] = "fp32"  # CPU loads float32 unless told otherwise
    arch = load_arch(model)

    def peak_at(micro_batch: int | None = None) -> float:
        batch = {} if micro_batch is None else {"micro_batch": micro_batch}
        return estimate(arch, Setup(**{**fields, **batch})).peak

    return peak_at


def estimate_peak(cfg: Any, device: str, micro_batch: int | None = None) -> float:
    """Estimated peak bytes per device of `cfg` (optionally at another micro-batch)."""
    return peak_function(cfg, device)(micro_batch)


def preflight(cfg: Any, device: str, log: Callable[[str], None]) -> Any:
    """`cfg`, possibly with a smaller micro-batch (auto_batch_size); logs the estimate."""
    budget = device_memory(device)
    try:
        peak_at = peak_function(cfg, device)
        peak = peak_at(None)
    except Exception as exc:  # an architecture the estimator does not know must not stop training
        log(f"memory: no estimate for {cfg.model} ({str(exc).splitlines()[0]})")
        return cfg
    if budget is None:
        return cfg
    log(f"memory: estimated peak {_gib(peak)} per device of {_gib(budget)} available")
    if peak <= HEADROOM * budget:
        return cfg
    fits = largest_fitting_batch(cfg, budget, peak_at)
    if not cfg.auto_batch_size:
        log(
            f"memory: WARNING the estimate exceeds {HEADROOM:.0%} of this device; consider "
            f"{suggestion(cfg, fits)}"
        )
        return cfg
    return _shrink(cfg, fits, log)


def _shrink(cfg: Any, fits: int | None, log: Callable[[str], None]) -> Any:
    global_batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if fits is None:
        log(f"memory: even micro-batch 1 is estimated not to fit; consider {suggestion(cfg, fits)}")
        return cfg.replace(per_device_train_batch_size=1, gradient_accumulation_steps=global_batch)
    accumulation = math.ceil(global_batch / fits)
    log(
        f"memory: auto_batch_size: per_device_train_batch_size {cfg.per_device_train_batch_size} -> "
        f"{fits}, gradient_accumulation_steps {cfg.gradient_accumulation_steps} -> {accumulation}"
    )
    return cfg.replace(per_device_train_batch_size=fits, gradient_accumulation_steps=accumulation)


def largest_fitting_batch(cfg: Any, budget: float, peak_at: PeakAt) -> int | None:
    """Largest micro-batch <= the configured one whose estimate fits, by bisection."""
    lo, hi = 0, cfg.per_device_train_batch_size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if peak_at(mid) <= HEADROOM * budget:
            lo = mid
        else:
            hi = mid - 1
    return lo or None


def suggestion(cfg: Any, fits: int | None) -> str:
    """What to change, cheapest first: the micro-batch that fits (`fits`, from
    largest_fitting_batch), checkpointing, then the method."""
    if fits:
        return (
            f"per_device_train_batch_size={fits} (with gradient_accumulation_steps="
            f"{math.ceil(cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps / fits)}) "
            f"or auto_batch_size=true"
        )
    if not cfg.gradient_checkpointing:
        return "gradient_checkpointing=true, a shorter cutoff_len, or method=qlora"
    return "a shorter cutoff_len, method=qlora, or `danlu plan` for a multi-GPU layout"


def oom_message(cfg: Any, device: str, step: int, exc: BaseException) -> str:
    """One line for an out-of-memory failure, with the estimator's suggestion."""
    budget = device_memory(device) or 0.0
    try:
        peak_at = peak_function(cfg, device)
        peak = f"estimated peak {_gib(peak_at(None))}, "
        hint = suggestion(cfg, largest_fitting_batch(cfg, budget, peak_at))
    except Exception:
        peak, hint = "", "a smaller per_device_train_batch_size or gradient_checkpointing=true"
    return f"out of memory at step {step} on {device} ({peak}{_gib(budget)} available): try {hint}"


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text
    )


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
