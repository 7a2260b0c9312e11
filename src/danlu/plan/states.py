"""Model states: trainable parameters per method, and their bytes under ZeRO / offload.

ZeRO (Rajbhandari et al. 2020, §5): with Φ parameters, 2-byte weights and gradients and K bytes
of optimizer state per parameter (K = 12 for mixed-precision Adam: fp32 master + m + v), a
device holds (2 + 2 + K)Φ without ZeRO; stage 1 partitions the optimizer states over the Nd
data-parallel ranks: 2Φ + 2Φ + KΦ/Nd; stage 2 also the gradients: 2Φ + (2 + K)Φ/Nd; stage 3
also the weights: (2 + 2 + K)Φ/Nd.
"""

from __future__ import annotations

from dataclasses import dataclass

from danlu.plan.arch import Arch
from danlu.plan.setup import DTYPE_BYTES, Setup
from danlu.utils.errors import UsageError


def lora_params(arch: Arch, rank: int, targets: tuple[str, ...]) -> int:
    """r·(fan_in + fan_out) per adapted linear (A is r×in, B is out×r), in every block."""
    shapes = [s for t in targets for s in arch.lora_shape(t)]
    if not shapes:
        raise UsageError(f"lora targets {list(targets)} match no linear layer of {arch.name}")
    return arch.layers * sum(rank * (i + o) for i, o in shapes)


def prefix_params(arch: Arch, pre_seq_len: int, projection: bool) -> int:
    """P-Tuning v2 / prefix: a key and a value vector per virtual token per layer
    (p·2·L·kv_dim); with the reparameterisation MLP (ChatGLM's prefix_projection) an
    embedding p·h and Linear(h, h) -> tanh -> Linear(h, 2·L·kv_dim)."""
    kv = 2 * arch.layers * arch.kv_dim
    if not projection:
        return pre_seq_len * kv
    h = arch.hidden
    return pre_seq_len * h + (h * h + h) + (h * kv + kv)


def trainable_params(arch: Arch, s: Setup) -> int:
    """Parameters the optimizer updates, per the method (DESIGN §4)."""
    m, h = s.method, arch.hidden
    if s.stage == "infer":
        return 0
    if m == "full":
        return arch.total_params()
    if m == "freeze":
        return min(abs(s.freeze_layers), arch.layers) * arch.block_params()
    if m in ("lora", "qlora", "adalora"):
        return lora_params(arch, s.lora_rank, s.lora_targets)
    if m in ("prefix", "ptuning_v2"):
        return prefix_params(arch, s.pre_seq_len, s.prefix_projection)
    if m == "prompt":
        return s.pre_seq_len * h
    if m == "ptuning":  # PEFT's MLP prompt encoder: embedding + 3 Linear(h, h)
        return s.pre_seq_len * h + 3 * (h * h + h)
    if m == "ia3":  # learned scales on k, v and the MLP down input
        return arch.layers * (2 * arch.kv_dim + arch.intermediate)
    raise UsageError(f"method '{m}' unknown; choose one of full, freeze, lora, qlora, prefix, ...")


def weight_bytes(arch: Arch, dtype: str) -> float:
    """Bytes of all weights at `dtype`. Quantisation (int8/int4) applies only to the block
    linears, as bitsandbytes does; embeddings, norms, biases and the head stay 16-bit."""
    total = arch.total_params()
    if dtype not in ("int8", "int4"):
        return total * DTYPE_BYTES[dtype]
    linear = arch.layers * arch.block_linear_params()
    return linear * DTYPE_BYTES[dtype] + (total - linear) * DTYPE_BYTES["bf16"]


@dataclass(frozen=True)
class States:
    """Per-device bytes of the model states, and what went to host RAM / NVMe."""

    weights: float
    gradients: float
    optimizer: float
    master: float
    host: float
    nvme: float


def model_states(arch: Arch, s: Setup, trainable: int) -> States:
    """Weights, gradients, optimizer states and master weights on one device (ZeRO-divided)."""
    shard = s.tp * s.pp  # model parallel splits every state
    n = s.dp if s.zero else 1
    w = weight_bytes(arch, s.base_weights) / shard
    if s.adapter:  # adapters come on top of the frozen base, in their own dtype
        w += trainable * DTYPE_BYTES[s.trained_dtype] / shard
    g = trainable * DTYPE_BYTES[s.gradient_dtype] / shard
    opt = trainable * s.optimizer_bytes / shard
    master = trainable * 4.0 / shard if s.uses_master else 0.0
    w, g, opt = zero_partition(w, g, opt, s.zero, n)
    master = master / (n if s.zero >= 1 else 1)
    host = nvme = 0.0
    moved = opt + master + (g if s.zero >= 2 else 0.0)  # ZeRO-Offload moves these off the GPU
    if s.offload_optimizer != "none":
        host, nvme = _place(s.offload_optimizer, moved, host, nvme)
        opt = master = 0.0
        g = 0.0 if s.zero >= 2 else g
    if s.offload_params != "none" and s.zero == 3:
        host, nvme = _place(s.offload_params, w, host, nvme)
        w = 0.0
    return States(weights=w, gradients=g, optimizer=opt, master=master, host=host, nvme=nvme)


def zero_partition(
    weights: float, grads: float, optim: float, stage: int, n: int
) -> tuple[float, float, float]:
    """Per-device share under ZeRO `stage` over n ranks: stage 1 divides the optimizer states
    (master weights included), stage 2 also the gradients, stage 3 also the weights."""
    return (
        weights / (n if stage >= 3 else 1),
        grads / (n if stage >= 2 else 1),
        optim / (n if stage >= 1 else 1),
    )


def _place(where: str, nbytes: float, host: float, nvme: float) -> tuple[float, float]:
    return (host + nbytes, nvme) if where == "cpu" else (host, nvme + nbytes)


def zero_comm_bytes(params: float, stage: int, bytes_per_param: float = 2.0) -> float:
    """Data-parallel traffic per step (ZeRO paper §7): an all-reduce of the gradients is a
    reduce-scatter plus an all-gather, 2Φ elements, for DDP and stages 1-2; stage 3 gathers
    the weights again in the backward pass: 3Φ, i.e. 1.5× DDP."""
    return (3.0 if stage == 3 else 2.0) * params * bytes_per_param


def comm_seconds(nbytes: float, gbit_per_s: float) -> float:
    """Time to move `nbytes` over a link of `gbit_per_s` gigabits per second."""
    return nbytes * 8 / (gbit_per_s * 1e9)
