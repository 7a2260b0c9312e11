"""Activation memory: the tensors autograd saves for the backward pass, counted per layer.

The count follows what a transformers 5 LLaMA-style block (LLaMA, Mistral, Qwen2, SmolLM) saves
with SDPA attention, per token, for hidden h, query width q = heads·d, key/value width k =
kv_heads·d, MLP width f, activation bytes c:

  each RMSNorm   h·(4 + 2c) + 4   input upcast to fp32 (4h), normalised (c·h), scaled output
                                  (c·h, the next linear's input), 1/rms (4)
  attention      c·(2q + 2k) + 4a query, key, value and output saved by SDPA, log-sum-exp (fp32)
  gated MLP      4·c·f            gate, up, SiLU(gate), SiLU(gate)·up
  (plain MLP     2·c·f            fc1 output and GELU output; LayerNorm saves 2·c·h)

For fp32 that is 44,588 bytes per token per layer for SmolLM2-135M (h=576, q=576, k=192,
f=1536, a=9), the exact figure `torch.autograd.graph.saved_tensors_hooks` reports. It is the
same shape of count as Korthikanti et al. 2022 (s·b·h·(34 + 5·a·s/h) for GPT-3 with dropout
and an unfused attention), specialised to today's fused attention, SwiGLU and no dropout.

The loss adds, at its peak in the backward pass, 4·V (the fp32 log-softmax saved by
cross-entropy) + 4·V (its gradient) + 4·V (the logits' gradient) per token: the B·S·V term
that dominates small models with large vocabularies.
"""

from __future__ import annotations

from dataclasses import dataclass

from danlu.plan.arch import Arch
from danlu.plan.setup import DTYPE_BYTES, Setup

PREFIX_METHODS = ("prefix", "ptuning_v2")
INPUT_PROMPT_METHODS = ("prompt", "ptuning")


@dataclass(frozen=True)
class Activations:
    """Bytes per device of one micro-batch's activations, split as reported."""

    layers: float
    """Saved by the blocks (all of them, or the checkpointed inputs + one recomputed block)."""
    loss: float
    """Logits, log-softmax and their gradients at the start of the backward pass."""
    recompute_factor: float
    """Forward passes per step: 1, or 2 with gradient checkpointing (≈4/3 the compute)."""


def norm_bytes(arch: Arch, c: float) -> float:
    """Per token, one norm: RMSNorm upcasts to fp32 (HF); LayerNorm saves input and output."""
    if arch.norm == "rms":
        return arch.hidden * (4 + 2 * c) + 4
    return 2 * arch.hidden * c + 8


def attention_bytes(arch: Arch, s: Setup, c: float) -> float:
    """Per token: q, k, v, output (+ log-sum-exp) for SDPA; eager attention also keeps the
    fp32 softmax and its c-byte copy, a·S_kv each, and repeats k/v to all heads."""
    kv_len = s.seq_len + (s.pre_seq_len if s.method in PREFIX_METHODS else 0)
    kv_scale = kv_len / s.seq_len  # prefix keys/values are concatenated in front
    q, k = arch.q_dim, arch.kv_dim
    if s.attention == "eager":
        return c * (4 * q) * kv_scale + arch.heads * kv_len * (4 + c)
    return c * (2 * q + 2 * k * kv_scale) + 4 * arch.heads


def mlp_bytes(arch: Arch, c: float) -> float:
    return (4 if arch.gated_mlp else 2) * c * arch.intermediate


def layer_bytes_per_token(arch: Arch, s: Setup) -> float:
    """Bytes one block saves per token (attention and MLP are split by tensor parallelism)."""
    c = DTYPE_BYTES[s.compute_dtype]
    split = (attention_bytes(arch, s, c) + mlp_bytes(arch, c)) / s.tp
    return 2 * norm_bytes(arch, c) + split + adapter_bytes_per_token(arch, s)


def adapter_bytes_per_token(arch: Arch, s: Setup) -> float:
    """LoRA saves A's output (r values) for B, per adapted linear; PEFT also casts the input
    to the fp32 adapter's dtype when activations are 16-bit, and lora_A saves that copy (fp32;
    under autocast the linear casts it back, so a c-byte copy is saved instead)."""
    if s.method not in ("lora", "qlora", "adalora"):
        return 0.0
    c = DTYPE_BYTES[s.compute_dtype]
    shapes = [sh for t in s.lora_targets for sh in arch.lora_shape(t)]
    copy = c if s.uses_autocast else 4.0
    cast = sum(fan_in for fan_in, _ in shapes) * copy if c != 4 else 0.0
    return (len(shapes) * s.lora_rank * c + cast) / s.tp


def grad_layers(arch: Arch, s: Setup) -> int:
    """Blocks that save activations: all, except below the trained blocks of `freeze` (no
    gradient flows there, so autograd records nothing)."""
    if s.method == "freeze" and s.freeze_layers > 0:
        return min(s.freeze_layers, arch.layers)
    return arch.layers


def tokens(s: Setup) -> int:
    """Tokens in one micro-batch; prompt tuning prepends its virtual tokens to the input."""
    extra = s.pre_seq_len if s.method in INPUT_PROMPT_METHODS else 0
    return s.micro_batch * (s.seq_len + extra)


def loss_bytes(arch: Arch, s: Setup) -> float:
    """fp32 log-softmax saved by cross-entropy (4), its gradient (4), the logits' gradient (4):
    12·B·S·V bytes, split over tensor-parallel ranks (vocab-parallel). The c-byte logits
    themselves are freed after the forward when, as in HF Trainer, only the loss is kept."""
    return tokens(s) * arch.vocab * 12 / s.tp


def training_activations(arch: Arch, s: Setup) -> Activations:
    """Peak activation bytes of one micro-batch. Checkpointing keeps each block's input (c·h
    per token) and recomputes one block at a time in the backward pass."""
    c = DTYPE_BYTES[s.compute_dtype]
    t, n = tokens(s), grad_layers(arch, s)
    per_layer = t * layer_bytes_per_token(arch, s)
    final_norm = t * norm_bytes(arch, c)
    loss = loss_bytes(arch, s)
    if not s.grad_ckpt:
        return Activations(layers=n * per_layer + final_norm, loss=loss, recompute_factor=1)
    kept = n * t * arch.hidden * c + final_norm
    # the recomputed block comes after the loss gradients are freed: the larger one counts
    recompute = max(0.0, per_layer - loss)
    return Activations(layers=kept + recompute, loss=loss, recompute_factor=2)


def kv_cache_bytes(arch: Arch, s: Setup) -> float:
    """Inference: a key and a value per layer per token of context: 2·L·kv_dim·B·S·c."""
    c = DTYPE_BYTES[s.compute_dtype]
    return 2 * arch.layers * arch.kv_dim * s.micro_batch * s.seq_len * c / s.tp


def prefill_bytes(arch: Arch, s: Setup) -> float:
    """Inference transient: one block's widest intermediates for the prompt (nothing is saved
    for backward), plus last-position logits in fp32."""
    c = DTYPE_BYTES[s.compute_dtype]
    width = 2 * arch.hidden + arch.q_dim + 2 * arch.kv_dim + 3 * arch.intermediate
    return tokens(s) * width * c / s.tp + s.micro_batch * arch.vocab * 4
