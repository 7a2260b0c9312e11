"""Per-device memory estimate: every component, and the peak of a training step.

A step has two phases whose peaks do not overlap (activations are freed before the optimizer
runs), so the peak is

  weights + master + optimizer states + overhead + ZeRO-3 buffers
    + max(activations + loss + gradients live in the backward pass,   # forward/backward
          gradients + optimizer temporaries)                            # optimizer.step()

With accumulation 1 and `zero_grad(set_to_none=True)` (HF Trainer, danlu) only the first
gradient (the output head) is live while the bulk of the activations is; with accumulation > 1
all gradients are. AdamW's multi-tensor (foreach) step on CUDA makes one fp32 temporary the
size of all trained parameters (sqrt(v) / bias correction); the per-tensor CPU path only the
size of the largest tensor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from danlu.plan import activations as act
from danlu.plan.arch import Arch
from danlu.plan.setup import DTYPE_BYTES, Setup
from danlu.plan.states import model_states, trainable_params, weight_bytes, zero_comm_bytes


@dataclass
class Estimate:
    """Bytes per device by component, the step's peak, and host RAM / NVMe needs."""

    model: str
    params: int
    trainable: int
    components: dict[str, float]
    peak: float
    host: dict[str, float] = field(default_factory=dict)
    nvme: float = 0.0
    comm_bytes_per_step: float = 0.0
    """Data-parallel traffic per device per optimizer step (ZeRO paper §7)."""
    compute_factor: float = 1.0
    """Relative compute of a step: 4/3 with gradient checkpointing (one more forward)."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(arch: Arch, s: Setup) -> Estimate:
    """Memory of `s` on `arch`, per device."""
    if s.stage == "infer":
        return _inference(arch, s)
    trainable = trainable_params(arch, s)
    st = model_states(arch, s, trainable)
    a = act.training_activations(arch, s)
    temp = _optimizer_temp(arch, s, trainable)
    live_grads = st.gradients if s.accumulation > 1 else min(st.gradients, _head_grad(arch, s))
    comp = {
        "weights": st.weights,
        "gradients": st.gradients,
        "optimizer_states": st.optimizer,
        "master_weights": st.master,
        "activations": a.layers,
        "logits_loss": a.loss,
        "optimizer_step_temp": temp,
        "zero3_buffers": _zero3_buffers(arch, s),
        "reference_model": _reference(arch, s),
        # grpo samples before the training forward: its cache is live while activations are not
        "generation_kv_cache": act.kv_cache_bytes(arch, s) if s.generates else 0.0,
        "overhead": s.framework_overhead,
    }
    static = st.weights + st.master + st.optimizer + comp["zero3_buffers"] + comp["overhead"]
    static += comp["reference_model"]
    peak = static + max(
        a.layers + a.loss + live_grads, st.gradients + temp, comp["generation_kv_cache"]
    )
    return Estimate(
        model=arch.name,
        params=arch.total_params(),
        trainable=trainable,
        components=comp,
        peak=peak,
        host=_host(arch, s, st.host),
        nvme=st.nvme,
        comm_bytes_per_step=_comm(trainable, s),
        compute_factor=(4 / 3 if s.grad_ckpt else 1.0),
        notes=_notes(s),
    )


def _optimizer_temp(arch: Arch, s: Setup, trainable: int) -> float:
    if s.optimizer != "adamw" or s.offload_optimizer != "none":
        return 0.0
    if s.device == "cuda":
        n = s.dp if s.zero >= 1 else 1
        return trainable * 4.0 / (n * s.tp * s.pp)
    return min(trainable, arch.largest_tensor()) * 4.0


def _head_grad(arch: Arch, s: Setup) -> float:
    """The first gradient the backward pass produces: the output head's (full fine-tuning)."""
    if s.method != "full":
        return 0.0
    return arch.vocab * arch.hidden * DTYPE_BYTES[s.gradient_dtype] / s.tp


def _zero3_buffers(arch: Arch, s: Setup) -> float:
    """ZeRO-3 gathers a block's full weights to use it, and prefetches the next: 2 blocks."""
    if s.zero != 3 or s.dp == 1:
        return 0.0
    return 2 * arch.block_params() * DTYPE_BYTES[s.base_weights] / s.tp


def _host(arch: Arch, s: Setup, offloaded: float) -> dict[str, float]:
    """Host RAM per process: offloaded states, plus one copy of the weights while loading
    (safetensors, loaded shard by shard; pickle .bin checkpoints as in the seeds need two)."""
    load = weight_bytes(arch, "bf16" if s.base_weights in ("int8", "int4") else s.base_weights)
    out = {"loading_copy": load / (s.tp * s.pp)}
    if offloaded:
        out["offloaded_states"] = offloaded
    return out


def _comm(trainable: int, s: Setup) -> float:
    if s.dp == 1:
        return 0.0
    return zero_comm_bytes(trainable, s.zero, DTYPE_BYTES[s.gradient_dtype]) / (s.tp * s.pp)


def _reference(arch: Arch, s: Setup) -> float:
    """The frozen reference copy (dpo/kto/grpo, full/freeze): the whole model again in its load dtype, never sharded."""
    return arch.total_params() * DTYPE_BYTES[s.base_weights] if s.reference_copy else 0.0


def _notes(s: Setup) -> list[str]:
    notes = []
    if s.reference_copy:
        notes.append(
            "reference: a frozen copy of the model (dpo: precompute_ref_log_probs avoids it)"
        )
    if s.generates:
        notes.append("grpo: micro_batch = prompts x num_generations answers, sampled each step")
    if s.device == "cpu":
        notes.append("cpu: no CUDA context; peak RSS also counts allocator slack")
    if s.grad_ckpt:
        notes.append("gradient checkpointing: one extra forward per step (~4/3 compute)")
    if s.offload_optimizer != "none":
        notes.append(f"optimizer states and step on {s.offload_optimizer} (ZeRO-Offload)")
    return notes


def _inference(arch: Arch, s: Setup) -> Estimate:
    st = model_states(arch, s, 0)
    comp = {
        "weights": st.weights,
        "kv_cache": act.kv_cache_bytes(arch, s),
        "activations": act.prefill_bytes(arch, s),
        "overhead": s.framework_overhead,
    }
    return Estimate(
        model=arch.name,
        params=arch.total_params(),
        trainable=0,
        components=comp,
        peak=sum(comp.values()),
        host=_host(arch, s, st.host),
        nvme=st.nvme,
    )
