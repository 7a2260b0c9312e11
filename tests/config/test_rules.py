"""The rule table: each rule can fail, and names its key."""

import re

import pytest

from danlu.config import ConfigError, load_config
from danlu.config.rules import RULES

BAD = {
    "threads": -1,
    "cutoff_len": 1,
    "max_source_len": 0,
    "max_target_len": 0,
    "val_size": 1.5,
    "preprocessing_num_workers": -1,
    "lora_rank": 0,
    "lora_alpha": 0,
    "lora_dropout": 1.0,
    "lora_target": [],
    "pre_seq_len": 0,
    "learning_rate": 0,
    "num_train_epochs": 0,
    "max_steps": 0,
    "per_device_train_batch_size": 0,
    "per_device_eval_batch_size": 0,
    "gradient_accumulation_steps": 0,
    "warmup_ratio": 1.0,
    "warmup_steps": -1,
    "weight_decay": -1,
    "max_grad_norm": -1,
    "logging_steps": 0,
    "save_steps": 0,
    "save_total_limit": 0,
    "eval_steps": 0,
    "prompt_encoder_hidden_size": 0,
    "adalora_target_r": 0,
    "adalora_tinit": -1,
    "adalora_tfinal": -1,
    "adalora_delta_t": 0,
    "adalora_total_step": 0,
    "adalora_orth_reg_weight": -1,
    "new_tokens": [" "],
    "template": "nonesuch",
    "pref_beta": 0,
    "pref_ftx": -1,
    "simpo_gamma": -0.5,
    "kto_chosen_weight": 0,
    "num_generations": 1,
    "max_completion_length": 0,
    "grpo_temperature": 0,
    "reward_funcs": [],
    "vllm_gpu_memory_utilization": 1.5,
    "kto_rejected_weight": -1,
    "deepspeed": "zero9",
    # distributed
    "nproc_per_node": 0,
    "nnodes": 0,
    "node_rank": -1,
    "master_port": 70000,
    "ddp_timeout": 0,
    # eval
    "eval_task": ["bleu"],
    "eval_data": [{"path": "a.json", "max_samples": 0}],
    "eval_models": [{"path": "a", "name": "x"}, {"path": "b", "name": "x"}],
    "n_shot": -1,
    "eval_max_samples": 0,
    "eval_max_new_tokens": 0,
    "eval_temperature": 0,
    "eval_top_p": 0,
    # rag
    "embedding_batch_size": 0,
    "chunk_size": 8,
    "top_k": 0,
    "rrf_k": 0,
    "rag_max_new_tokens": 0,
    "rag_template": "no slots here",
    "reranker": "/nonexistent/reranker",
}


@pytest.mark.parametrize("key", sorted(BAD))
def test_single_key_rule_rejects(key):
    with pytest.raises(ConfigError) as info:
        load_config(
            None, [f"{key}={BAD[key]!r}" if isinstance(BAD[key], str) else f"{key}={BAD[key]}"]
        )
    assert str(info.value).startswith(f"override '{key}=")
    assert f": {key} " in str(info.value)


def test_every_single_key_rule_is_exercised():
    single = {r.keys[0] for r in RULES if len(r.keys) == 1 and r.keys[0] != "data"}
    assert single <= set(BAD), f"add a failing value for: {single - set(BAD)}"


def test_data_weight_rule():
    with pytest.raises(ConfigError, match=r"data weights must all be > 0"):
        load_config(None, ["data=[{path: a.json, weight: 0}]"])


def test_qlora_needs_bits():
    with pytest.raises(ConfigError, match="qlora needs quantization_bit"):
        load_config(None, ["method=qlora"])
    assert load_config(None, ["method=qlora", "quantization_bit=4"]).quantization_bit == 4


def test_packing_refused_for_prompt_learning():
    with pytest.raises(ConfigError, match="packing cannot be used with prompt-learning"):
        load_config(None, ["packing=true", "method=prefix"])
    assert load_config(None, ["packing=true", "method=lora"]).packing


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["node_rank=2", "nnodes=2"], "node_rank must be < nnodes"),
        (["distributed=deepspeed"], "distributed: deepspeed needs deepspeed: a preset"),
        (["distributed=fsdp", "deepspeed=zero2"], "so distributed must be auto or deepspeed"),
        (["deepspeed=zero3", "method=qlora", "quantization_bit=4"], "ZeRO-3 shards every"),
        (["distributed=fsdp", "method=qlora", "quantization_bit=4"], "FSDP cannot shard a 4/8"),
        (["fsdp_offload=true"], "fsdp_offload needs distributed: fsdp"),
        (["fsdp_sharding=shard_grad_op"], "fsdp_sharding needs distributed: fsdp"),
    ],
)
def test_distributed_cross_rules(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_distributed_combinations_that_are_fine():
    cfg = load_config(None, ["deepspeed=zero2", "method=qlora", "quantization_bit=4"])
    assert cfg.deepspeed == "zero2"
    cfg = load_config(None, ["distributed=fsdp", "fsdp_offload=true", "node_rank=1", "nnodes=2"])
    assert (cfg.distributed, cfg.fsdp_offload, cfg.node_rank) == ("fsdp", True, 1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["chunk_overlap=100"],
            "chunk_size=200, chunk_overlap=100: chunk_overlap must be in [0, chunk_size / 2)",
        ),
        (
            ["parent_chunk_size=150"],
            "chunk_size=200, parent_chunk_size=150: parent_chunk_size must be 0 (off)",
        ),
    ],
)
def test_rag_chunk_rules(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)
    load_config(None, ["chunk_overlap=99", "parent_chunk_size=201"])  # the edges that pass
