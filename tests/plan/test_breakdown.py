"""Hand-computed breakdowns on a tiny architecture, for each method (docs/memory.md)."""

from __future__ import annotations

import pytest

from danlu.plan import Arch, Setup, estimate
from danlu.plan.activations import layer_bytes_per_token, training_activations
from danlu.plan.states import trainable_params

# h=64, 2 blocks, 4 heads of 16, 2 kv heads (kv width 32), SwiGLU 128, vocab 1000, tied.
TINY = Arch(
    name="tiny",
    hidden=64,
    layers=2,
    heads=4,
    kv_heads=2,
    intermediate=128,
    vocab=1000,
    tie_embeddings=True,
)
# block: q 64·64 + k 64·32 + v 64·32 + o 64·64 + 3·64·128 = 36,864 linear + 2 norms of 64
BLOCK = 36_864 + 128
TOTAL = 1000 * 64 + 2 * BLOCK + 64  # embeddings + blocks + final norm (head tied)
CPU = Setup(weights="fp32", device="cpu", micro_batch=1, seq_len=10)


def test_parameter_counts():
    assert TINY.block_params() == BLOCK
    assert TINY.total_params() == TOTAL == 138_048


@pytest.mark.parametrize(
    ("method", "extra", "trained"),
    [
        ("full", {}, TOTAL),
        ("freeze", {"freeze_layers": 1}, BLOCK),
        # r·(in+out): q 8·128, k 8·96, v 8·96, o 8·128, gate/up/down 8·192 each; 2 blocks
        ("lora", {"lora_rank": 8}, 2 * (1024 + 768 + 768 + 1024 + 3 * 1536)),
        ("lora", {"lora_rank": 4, "lora_targets": ("q_proj", "v_proj")}, 2 * (4 * 128 + 4 * 96)),
        ("prefix", {"pre_seq_len": 16}, 16 * 2 * 2 * 32),  # p · (k and v) · blocks · kv width
        ("prompt", {"pre_seq_len": 16}, 16 * 64),
    ],
)
def test_trainable_parameters(method, extra, trained):
    assert trainable_params(TINY, CPU.with_(method=method, **extra)) == trained


def test_activation_bytes_per_token_per_block_fp32():
    """2 RMSNorms h·(4+2·4)+4, attention 4·(2·64 + 2·32) + 4 heads·4, SwiGLU 4·4·128."""
    s = CPU.with_(method="full")
    assert layer_bytes_per_token(TINY, s) == 2 * (64 * 12 + 4) + (768 + 16) + 2048 == 4376


def test_full_finetuning_cpu_breakdown_and_peak():
    s = CPU.with_(method="full")
    e = estimate(TINY, s)
    c = e.components
    assert c["weights"] == c["gradients"] == TOTAL * 4
    assert c["optimizer_states"] == TOTAL * 8 and c["master_weights"] == 0
    assert c["activations"] == 10 * (2 * 4376 + 772)  # 2 blocks + the final norm
    assert c["logits_loss"] == 10 * 1000 * 12
    assert c["optimizer_step_temp"] == 64_000 * 4  # per-tensor AdamW on CPU: the embedding
    fwd_bwd = c["activations"] + c["logits_loss"] + 64_000 * 4  # + the head's gradient
    step = c["gradients"] + c["optimizer_step_temp"]
    assert e.peak == c["weights"] + c["optimizer_states"] + max(fwd_bwd, step)


def test_freeze_saves_activations_only_above_the_trained_blocks():
    s = CPU.with_(method="freeze", freeze_layers=1)
    assert training_activations(TINY, s).layers == 10 * (4376 + 772)


def test_lora_adds_rank_outputs_and_adapter_states():
    s = CPU.with_(method="lora", lora_rank=8)
    e = estimate(TINY, s)
    trained = 2 * 8192
    assert e.components["weights"] == (TOTAL + trained) * 4
    assert e.components["optimizer_states"] == trained * 8
    # fp32: no cast copies; A's r outputs for 7 adapted linears
    assert layer_bytes_per_token(TINY, s) == 4376 + 7 * 8 * 4


def test_gradient_checkpointing_keeps_block_inputs():
    s = CPU.with_(method="full", grad_ckpt=True)
    a = training_activations(TINY, s)
    kept = 2 * 10 * 64 * 4 + 10 * 772
    assert a.layers == kept + max(0, 10 * 4376 - 10 * 1000 * 12)
    assert a.recompute_factor == 2


def test_bf16_mixed_precision_full():
    s = Setup(method="full", weights="bf16", micro_batch=1, seq_len=10)
    c = estimate(TINY, s).components
    assert (c["weights"], c["gradients"], c["master_weights"], c["optimizer_states"]) == (
        TOTAL * 2,
        TOTAL * 2,
        TOTAL * 4,
        TOTAL * 8,
    )
    assert c["optimizer_step_temp"] == TOTAL * 4  # foreach AdamW on CUDA: all parameters
    assert c["overhead"] == 1.3e9


def test_inference_kv_cache():
    s = Setup(stage="infer", weights="fp16", micro_batch=2, seq_len=100)
    c = estimate(TINY, s).components
    assert (
        c["kv_cache"] == 2 * 2 * 32 * 2 * 100 * 2
    )  # K and V · blocks · kv width · B · S · 2 bytes
    assert c["weights"] == TOTAL * 2


def test_qlora_weights_are_4_bit():
    s = Setup(method="qlora")
    linear = 2 * 36_864
    assert estimate(TINY, s).components["weights"] == pytest.approx(
        linear * (0.5 + 0.127 / 8) + (TOTAL - linear) * 2 + 2 * 8192 * 4
    )
