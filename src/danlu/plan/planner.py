"""`danlu plan`: the fastest configuration that fits, following the seeds' rules.

Candidates are the layouts the seeds list — one GPU: plain, gradient checkpointing, 8-bit
optimizer / 4-bit base (QLoRA), ZeRO-Offload; one node: DDP, ZeRO-1/2/3 (FSDP), pipeline
parallel; several nodes: ZeRO, or DP + PP + TP + ZeRO-1 ("3D") — each with the largest
power-of-two micro-batch that fits. Among those that fit (peak <= 90% of a GPU, leaving room
for allocator fragmentation) the one with the least estimated step time wins. The time model
is deliberately simple: compute at 40% of peak FLOPs ((4Φ + 2Φ_trained) FLOPs per token,
+2Φ with recomputation, ×1.3 for dequantising a 4-bit base), the pipeline bubble (p-1)/m,
and communication that is not overlapped: the ZeRO traffic over the slowest link the
data-parallel group spans, tensor-parallel all-reduces (4 per layer per micro-batch) and
pipeline activations, and the PCIe traffic + CPU Adam step of offloading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from danlu.plan.arch import Arch
from danlu.plan.estimate import Estimate, estimate
from danlu.plan.hardware import PCIE_GBPS, Hardware
from danlu.plan.setup import DTYPE_BYTES, Setup
from danlu.plan.states import comm_seconds, weight_bytes

HEADROOM = 0.9
MFU = 0.4
QLORA_SLOWDOWN = 1.4
"""Dequantising NF4 weights in every matmul: QLoRA steps run ~1.3-1.5x slower than bf16 LoRA."""
TIE = 1.02
"""Options within 2% of the fastest are ties; the seeds' order (earlier layout) decides."""


@dataclass(frozen=True)
class Layout:
    name: str
    changes: dict = field(default_factory=dict)
    """Setup fields this layout sets (zero, dp, tp, pp, offload, method, weights, optimizer)."""


@dataclass
class Option:
    layout: Layout
    setup: Setup
    est: Estimate
    fits: bool
    seconds: float

    @property
    def accumulation(self) -> int:
        return self.setup.accumulation


@dataclass
class Plan:
    chosen: Option | None
    options: list[Option]
    global_batch: int
    suggestion: str = ""


def layouts(hw: Hardware, method: str) -> list[Layout]:
    """The seeds' candidate layouts for this hardware, in the order they recommend them."""
    n, g = hw.total_gpus, hw.gpus_per_node
    out = [Layout("ddp" if n > 1 else "single", {"dp": n})]
    if n > 1:
        # ZeRO-2 before ZeRO-1: the same traffic as DDP and less memory, so it wins ties
        out += [Layout(f"zero{k}", {"zero": k, "dp": n}) for k in (2, 1, 3)]
    out += [
        Layout("zero2+offload", {"zero": 2, "dp": n, "offload_optimizer": "cpu"}),
        Layout(
            "zero3+offload",
            {"zero": 3, "dp": n, "offload_optimizer": "cpu", "offload_params": "cpu"},
        ),
    ]
    if hw.nodes == 1 and g > 1:
        out.append(Layout(f"pp{g}", {"pp": g, "dp": 1}))
    if hw.nodes > 1:
        tp = g if hw.nvlink else 1
        pp = hw.nodes if tp > 1 else n
        out.append(
            Layout(
                f"3d(tp{tp},pp{pp},dp{n // (tp * pp)},zero1)",
                {"tp": tp, "pp": pp, "dp": n // (tp * pp), "zero": 1},
            )
        )
    if method in ("lora", "adalora"):
        out.append(Layout("qlora", {"dp": n, "method": "qlora", "weights": "int4"}))
    if method in ("full", "freeze"):
        out.append(Layout("adamw_8bit", {"dp": n, "optimizer": "adamw_8bit"}))
    return out


def step_seconds(arch: Arch, s: Setup, hw: Hardware, est: Estimate, global_batch: int) -> float:
    """Estimated seconds per optimizer step (see the module docstring)."""
    phi, n = arch.total_params(), hw.total_gpus
    toks = global_batch * s.seq_len
    per_token = 4 * phi + 2 * est.trainable + (2 * phi if s.grad_ckpt else 0)
    # small micro-batches leave the GPU under-used: full efficiency from ~2k tokens on
    eff = min(1.0, s.micro_batch * s.seq_len / 2048) ** 0.25
    compute = per_token * toks / (n * hw.tflops * 1e12 * MFU * eff)
    compute *= QLORA_SLOWDOWN if s.base_weights == "int4" else 1.0
    compute *= 1 + (s.pp - 1) / max(1, s.accumulation)
    dp_link = hw.network_gbps if hw.nodes > 1 and s.dp > hw.gpus_per_node // s.tp else hw.intra_gbps
    ring = (s.dp - 1) / s.dp if s.dp > 1 else 0.0
    comm = comm_seconds(est.comm_bytes_per_step * ring, dp_link)
    c = DTYPE_BYTES[s.compute_dtype]
    per_mb = s.micro_batch * s.seq_len * arch.hidden * c
    if s.tp > 1:
        comm += comm_seconds(
            4 * arch.layers * per_mb * s.accumulation * 2 * (s.tp - 1) / s.tp, hw.intra_gbps
        )
    if s.pp > 1:
        link = hw.network_gbps if hw.nodes > 1 else hw.intra_gbps
        comm += comm_seconds(2 * per_mb * s.accumulation * (s.pp - 1), link)
    if s.offload_optimizer != "none":  # grads down, weights up, CPU Adam at ~1e9 params/s
        shard = est.trainable / max(1, s.dp)
        comm += comm_seconds(2 * shard * 2, PCIE_GBPS) + shard / 1e9
    if s.offload_params != "none":  # every micro-batch fetches the weights for fwd and bwd
        w = weight_bytes(arch, s.base_weights) / max(1, s.dp)
        comm += comm_seconds(2 * w * s.accumulation, PCIE_GBPS)
    return compute + comm


def _best_micro_batch(arch: Arch, s: Setup, hw: Hardware, global_batch: int) -> Setup | None:
    """Largest power-of-two micro-batch that fits, with accumulation to reach the global batch."""
    per_step = max(1, global_batch // max(1, s.dp))
    mb = 1
    while mb * 2 <= per_step:
        mb *= 2
    while mb >= 1:
        trial = s.with_(micro_batch=mb, accumulation=max(1, -(-per_step // mb)))
        if estimate(arch, trial).peak <= hw.gpu_bytes * HEADROOM:
            return trial
        mb //= 2
    return None


def _option(arch: Arch, base: Setup, lay: Layout, gc: bool, hw: Hardware, gb: int) -> Option:
    s = base.with_(grad_ckpt=gc, **lay.changes)
    fitted = _best_micro_batch(arch, s, hw, gb)
    s = fitted or s.with_(micro_batch=1, accumulation=max(1, gb // max(1, s.dp)))
    est = estimate(arch, s)
    return Option(lay, s, est, fitted is not None, step_seconds(arch, s, hw, est, gb))


def plan(arch: Arch, base: Setup, hw: Hardware, global_batch: int) -> Plan:
    """Every candidate layout with and without gradient checkpointing; the fastest that fits."""
    options = [
        _option(arch, base, lay, gc, hw, global_batch)
        for lay in layouts(hw, base.method)
        for gc in (False, True)
    ]
    fitting = [o for o in options if o.fits and _host_ok(o, hw)]
    chosen = None
    if fitting:
        best = min(o.seconds for o in fitting)
        chosen = next(o for o in fitting if o.seconds <= best * TIE)
    suggestion = "" if chosen else suggest(arch, base, hw, global_batch)
    return Plan(chosen=chosen, options=options, global_batch=global_batch, suggestion=suggestion)


def _host_ok(o: Option, hw: Hardware) -> bool:
    """Offloaded states and loading copies of every process on a node must fit its RAM."""
    if hw.host_bytes is None:
        return True
    return sum(o.est.host.values()) * hw.gpus_per_node <= hw.host_bytes * HEADROOM


def suggest(arch: Arch, base: Setup, hw: Hardware, global_batch: int) -> str:
    """What would fit: more GPUs of the same size (ZeRO-3 + checkpointing), or QLoRA."""
    ideas = []
    for extra in range(1, 1024):
        n = hw.total_gpus + extra
        s = base.with_(zero=3, dp=n, grad_ckpt=True, micro_batch=1)
        if estimate(arch, s).peak <= hw.gpu_bytes * HEADROOM:
            ideas.append(
                f"needs {extra} more {hw.gpu_bytes / 2**30:g} GB GPU(s) (ZeRO-3, checkpointing)"
            )
            break
    q = base.with_(
        method="qlora",
        weights="int4",
        grad_ckpt=True,
        micro_batch=1,
        dp=hw.total_gpus,
        zero=3 if hw.total_gpus > 1 else 0,
    )
    if base.method != "qlora" and estimate(arch, q).peak <= hw.gpu_bytes * HEADROOM:
        ideas.append("or QLoRA (4-bit base, LoRA adapters) fits on this hardware")
    return "; ".join(ideas) or "nothing within 1024 GPUs of this size; use larger GPUs"
