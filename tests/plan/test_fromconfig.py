"""A run config -> the estimator's Setup: processes and sharding are read from the config."""

from __future__ import annotations

import pytest

from danlu.config import load_config
from danlu.plan.fromconfig import setup_from_config


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], {}),
        (["nproc_per_node=8"], {"dp": 8}),
        (["nproc_per_node=8", "nnodes=3", "deepspeed=zero3_offload"],
         {"dp": 24, "zero": 3, "offload_optimizer": "cpu", "offload_params": "cpu"}),
        (["nproc_per_node=4", "distributed=fsdp"], {"dp": 4, "zero": 3}),
        (["nproc_per_node=4", "distributed=fsdp", "fsdp_sharding=shard_grad_op"],
         {"dp": 4, "zero": 2}),
        (["nproc_per_node=2", "distributed=fsdp", "fsdp_offload=true"],
         {"dp": 2, "zero": 3, "offload_optimizer": "cpu", "offload_params": "cpu"}),
    ],
)  # fmt: skip
def test_processes_and_sharding(overrides, expected):
    _, fields = setup_from_config(load_config(None, overrides))
    keys = ("dp", "zero", "offload_optimizer", "offload_params")
    assert {k: fields[k] for k in keys if k in fields} == expected


def test_a_launched_rank_counts_the_launchers_world(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "16")
    _, fields = setup_from_config(load_config(None, ["deepspeed=zero2"]))
    assert (fields["dp"], fields["zero"]) == (16, 2)


@pytest.mark.parametrize(
    ("overrides", "rows", "copy"),
    [
        (["stage=sft"], 4, False),
        (["stage=rm"], 8, False),
        (["stage=dpo"], 8, False),  # lora: the reference is the adapter switched off
        (["stage=dpo", "method=full"], 8, True),
        (["stage=dpo", "method=freeze"], 8, True),
        (["stage=dpo", "method=full", "precompute_ref_log_probs=true"], 8, False),
        (["stage=dpo", "method=full", "pref_loss=simpo"], 8, False),
        (["stage=kto"], 8, False),  # each answer and its mismatched row
        (["stage=kto", "method=full"], 8, True),
        (["stage=grpo", "num_generations=8"], 32, False),  # prompts x answers
        (["stage=grpo", "method=full"], 16, True),
        (["stage=grpo", "method=full", "pref_beta=0"], 16, False),  # no KL term, no reference
    ],
)
def test_preference_stages_count_both_answers_and_the_reference(overrides, rows, copy):
    from danlu.plan.estimate import estimate
    from danlu.plan.setup import DTYPE_BYTES, Setup
    from danlu.plan.sources import load_arch

    _, fields = setup_from_config(load_config(None, ["per_device_train_batch_size=4", *overrides]))
    assert (fields["micro_batch"], fields["reference_copy"]) == (rows, copy)
    arch = load_arch("qwen2.5-7b")
    est = estimate(arch, Setup(**fields))
    want = arch.total_params() * DTYPE_BYTES[fields["weights"]] if copy else 0.0
    assert est.components["reference_model"] == want


def test_grpo_counts_the_sampled_answers_and_their_kv_cache():
    from danlu.plan.estimate import estimate
    from danlu.plan.setup import Setup
    from danlu.plan.sources import load_arch

    cfg = load_config(None, ["stage=grpo", "per_device_train_batch_size=2", "num_generations=4",
                             "cutoff_len=512", "max_completion_length=256"])  # fmt: skip
    _, fields = setup_from_config(cfg)
    assert (fields["micro_batch"], fields["seq_len"], fields["generates"]) == (8, 768, True)
    arch = load_arch("qwen2.5-7b")
    est = estimate(arch, Setup(**fields))
    kv = 2 * arch.layers * arch.kv_dim * 8 * 768 * 2  # bf16 keys and values of 8 x 768 tokens
    assert est.components["generation_kv_cache"] == kv
    sft = estimate(arch, Setup(**{**fields, "generates": False}))
    assert sft.components["generation_kv_cache"] == 0.0 and est.peak >= sft.peak
