"""The seeds' memory figures, each reproduced from the formulas (docs/memory.md §Seeds)."""

from __future__ import annotations

import pytest

from danlu.plan import Setup, estimate, load_arch
from danlu.plan.hardware import GIB
from danlu.plan.setup import DTYPE_BYTES, OPTIMIZER_BYTES
from danlu.plan.states import (
    comm_seconds,
    model_states,
    weight_bytes,
    zero_comm_bytes,
    zero_partition,
)


@pytest.mark.parametrize(
    ("name", "params", "seed_gb"),
    [
        ("llama-7b", 6_738_415_616, 13),
        ("llama-13b", 13_015_864_320, 24),
        ("llama-33b", 32_528_943_616, 60),
        ("llama-65b", 65_285_660_672, 120),
    ],
)
def test_fp16_weights_of_llama(name, params, seed_gb):
    """Seeds: fp16 weights of 7B/13B/33B/65B ≈ 13/24/60/120 GB (binary GB: 12.6/24.2/60.6/121.6)."""
    arch = load_arch(name)
    assert arch.total_params() == params  # the published checkpoints' counts
    size = weight_bytes(arch, "fp16")
    assert size == 2 * params
    assert abs(size / GIB - seed_gb) / seed_gb < 0.04


def test_int8_and_int4_weights_of_llama_7b():
    """int8/int4 shrink the block linears only (bitsandbytes); the 262M embedding + head
    parameters stay 16-bit. 7B: 6,476,005,376 linear weights."""
    arch = load_arch("llama-7b")
    linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    rest = arch.total_params() - linear
    assert linear == 6_476_005_376
    assert weight_bytes(arch, "int8") == linear * 1 + rest * 2 == 7_000_825_856
    assert weight_bytes(arch, "int4") == pytest.approx(linear * (0.5 + 0.127 / 8) + rest * 2)
    assert weight_bytes(arch, "int4") / GIB == pytest.approx(3.60, abs=0.01)


def test_full_finetuning_is_16_bytes_per_parameter():
    """AdamW mixed precision: fp16 weights 2 + fp16 grads 2 + fp32 master, m, v 12 = 16Φ."""
    arch = load_arch("llama-7b")
    s = Setup(method="full", weights="fp16")
    st = model_states(arch, s, arch.total_params())
    assert (st.weights, st.gradients, st.master, st.optimizer) == (
        2 * arch.total_params(),
        2 * arch.total_params(),
        4 * arch.total_params(),
        8 * arch.total_params(),
    )


def test_llama_6b_int8_is_25_3_gb():
    """Seeds: 6B params, everything int8: 6 GB weights + 6 GB grads + 12 GB (2 optimizer
    states of 1 byte) + 1.3 GB CUDA context = 25.3 GB. 8-bit AdamW's block scales add 0.2%."""
    n = 6e9
    w, g, o = zero_partition(n * DTYPE_BYTES["int8"], n * DTYPE_BYTES["int8"], n * 2, 0, 1)
    assert w + g + o + Setup().framework_overhead == pytest.approx(25.3e9)
    o8 = n * OPTIMIZER_BYTES["adamw_8bit"]
    assert w + g + o8 + 1.3e9 == pytest.approx(25.3e9, rel=0.002)


@pytest.mark.parametrize(("stage", "gb"), [(0, 120.0), (1, 31.40625), (2, 16.640625), (3, 1.875)])
def test_zero_paper_7_5b_on_64_gpus(stage, gb):
    """ZeRO paper Fig. 1: Ψ = 7.5B, Nd = 64, K = 12: 120 / 31.4 / 16.6 / 1.9 GB per GPU."""
    psi = 7.5e9
    w, g, o = zero_partition(2 * psi, 2 * psi, 12 * psi, stage, 64)
    assert w + g + o == pytest.approx(gb * 1e9)


def test_zero3_states_divide_by_world_in_the_estimator():
    arch = load_arch("llama-7b")
    s = Setup(method="full", weights="fp16", zero=3, dp=64)
    c = estimate(arch, s).components
    total = c["weights"] + c["gradients"] + c["master_weights"] + c["optimizer_states"]
    assert total == pytest.approx(16 * arch.total_params() / 64)


def test_zero3_communication_65b_on_10gbps():
    """Seeds: ZeRO-3 moves ~3x the parameter bytes per step; 65B counted at one byte per
    parameter (the seeds' 65 GB) -> 195 GB -> 156 s on 10 Gb/s. In fp16 it is twice that."""
    assert zero_comm_bytes(65e9, 3, bytes_per_param=1) == 195e9
    assert comm_seconds(zero_comm_bytes(65e9, 3, 1), 10) == pytest.approx(156.0)
    assert comm_seconds(zero_comm_bytes(65e9, 3, 2), 10) == pytest.approx(312.0)
    assert zero_comm_bytes(65e9, 2, 2) / zero_comm_bytes(65e9, 3, 2) == pytest.approx(2 / 3)
