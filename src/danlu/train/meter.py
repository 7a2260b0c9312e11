"""The throughput meter of a run: how many FLOPs each token costs (for MFU) and the peak."""

from __future__ import annotations

from typing import Any

from danlu.data.pack import token_lengths
from danlu.train.flops import cpu_peak_flops, flops_model, gpu_peak_flops
from danlu.train.metrics import ThroughputMeter
from danlu.utils.system import danlu_home


def build_meter(
    cfg: Any, model: Any, train_ds: Any, device: str, reference: str
) -> ThroughputMeter:
    """tokens/s and MFU: model FLOPs per token at the data's mean sample length over the peak;
    a reference model's forward (dpo, kto, grpo) and grpo's sampling forward count as work."""
    flops, seq = flops_model(model), _mean_sample_len(train_ds)
    if cfg.stage == "grpo":
        seq += cfg.max_completion_length
    extra = (reference in ("adapter_off", "copy")) + (cfg.stage == "grpo")
    per_token = flops.per_token(seq) + extra * flops.forward(seq)
    return ThroughputMeter(flops_per_token=per_token, peak_flops=_peak(cfg, device))


def _mean_sample_len(ds: Any) -> int:
    import pyarrow.compute as pc

    if "lengths" in ds.column_names:  # packed: attention spans one sample, not the whole row
        lengths = pc.list_flatten(ds.with_format("arrow")["lengths"])
    else:
        lengths = token_lengths(ds)
    return max(round(pc.mean(lengths).as_py() or 1), 1)


def _peak(cfg: Any, device: str) -> float | None:
    if device == "cuda":
        import torch

        return gpu_peak_flops(torch.cuda.get_device_name()) if (cfg.bf16 or cfg.fp16) else None
    if device == "cpu":
        dtype = "bfloat16" if cfg.bf16 else "float32"
        return cpu_peak_flops(dtype, cache_file=danlu_home() / "cpu_peak_flops.json")
    return None
