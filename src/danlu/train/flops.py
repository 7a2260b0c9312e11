"""Model FLOPs per trained token and hardware peak FLOP/s, for MFU in the training logs.

Convention (PaLM appendix B, adapted to parameter-efficient methods): a forward pass costs
2 FLOPs per weight per token; the backward pass costs 2 more for the activation gradients
(needed through every layer, frozen or not) and 2 more for weight gradients of *trainable*
weights only. Attention scores add 12 * layers * hidden * seq_len per token for a full
forward+backward (6 forward-equivalent x 2 for QK^T and AV). So full fine-tuning gives the
familiar 6N + 12*L*H*S, while LoRA gives about 4N + 12*L*H*S. Recomputation from gradient
checkpointing is *not* counted: MFU measures useful work, so checkpointing lowers it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from danlu.methods.registry import logical_numel

# Dense peak TFLOP/s for bf16/fp16 tensor-core matmuls (vendor datasheets, no sparsity).
GPU_PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100": 989.0,
    "H800": 989.0,
    "H20": 148.0,
    "A100": 312.0,
    "A800": 312.0,
    "A40": 149.7,
    "A10G": 70.0,
    "A10": 125.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "4090": 165.2,
    "3090": 71.0,
    "V100": 125.0,
    "T4": 65.0,
    "B200": 2250.0,
}


@dataclass(frozen=True)
class FlopsModel:
    params: int
    """All weights that take part in the matmuls (embedding lookups excluded)."""
    trainable: int
    layers: int
    hidden: int

    def per_token(self, seq_len: int) -> float:
        """Training FLOPs for one token of a sequence of `seq_len` tokens."""
        linear = 4 * self.params + 2 * min(self.trainable, self.params)
        attention = 12 * self.layers * self.hidden * seq_len
        return float(linear + attention)

    def forward(self, seq_len: int) -> float:
        """FLOPs of one forward-only token (a reference model's, or a sampled one's)."""
        return float(2 * self.params + 4 * self.layers * self.hidden * seq_len)


def flops_model(model: Any) -> FlopsModel:
    """Count matmul weights (excluding the input embedding lookup) and trainable ones."""
    cfg = getattr(model, "config", None)
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    embed_ids = {id(p) for p in embed.parameters()} if embed is not None else set()
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    params = trainable = 0
    for p in model.parameters():
        is_embed = id(p) in embed_ids
        if is_embed and not tied:
            continue  # a lookup, not a matmul (untied: the LM head is a separate weight)
        n = logical_numel(p)
        params += n
        trainable += n if p.requires_grad else 0
    return FlopsModel(
        params,
        trainable,
        _cfg_int(cfg, "num_hidden_layers", "num_layers"),
        _cfg_int(cfg, "hidden_size", "n_embd"),
    )


def _cfg_int(cfg: Any, *names: str) -> int:
    text_cfg = getattr(cfg, "text_config", None) or cfg
    for name in names:
        value = getattr(text_cfg, name, None)
        if isinstance(value, int):
            return value
    return 0


def gpu_peak_flops(name: str) -> float | None:
    """Peak bf16 FLOP/s of a GPU named like torch reports it, if known."""
    for key in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):
        if key in name.upper():
            return GPU_PEAK_TFLOPS[key] * 1e12
    return None


def measure_matmul_flops(
    dtype_name: str = "bfloat16", size: int = 1024, seconds: float = 1.0
) -> float:
    """Measured matmul FLOP/s on this CPU: the practical peak MFU is reported against.

    CPUs have no datasheet number that matters (turbo, AVX-512/AMX, threads), so we time a
    square matmul in the training dtype for about `seconds`.
    """
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm up (thread pool, kernels)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - start)


def cpu_peak_flops(dtype_name: str, cache_file: Any = None, seconds: float = 0.5) -> float:
    """Matmul peak for this CPU + thread count + dtype: the best ever measured here (cached JSON).

    A single measurement taken while other processes load the machine reads low and would make
    every later MFU read high (even above 1); so each run measures briefly again and the cache
    keeps the maximum, which converges to what the hardware can really do.
    """
    import torch

    from danlu.utils.envinfo import cpu_model

    key = f"{cpu_model()}|{torch.get_num_threads()}|{dtype_name}|{torch.__version__}"
    cache: dict[str, float] = {}
    if cache_file is not None and cache_file.is_file():
        cache = json.loads(cache_file.read_text())
    measured = measure_matmul_flops(dtype_name, seconds=seconds)
    if measured > cache.get(key, 0.0):
        cache[key] = measured
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            tmp.replace(cache_file)
    return cache[key]
