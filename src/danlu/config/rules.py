"""Every range and cross-key validation rule, in one table.

A rule names the keys it reads, a predicate over their values, and what must hold. Rules whose
keys are all at their defaults still run: a default can never be invalid, and that is tested.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danlu.config.sections import DEEPSPEED_PRESETS, TEMPLATE_NAMES


@dataclass(frozen=True)
class Rule:
    keys: tuple[str, ...]
    ok: Callable[..., bool]
    must: str
    """What must hold, phrased to follow the key: 'must be > 0'."""


def _is_file(value: str) -> bool:
    """A path that exists now (relative paths from the working directory, as data paths)."""
    return Path(value).expanduser().is_file()


def _opt(pred: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """Apply `pred` only when the optional value is set."""
    return lambda v: v is None or pred(v)


RULES: list[Rule] = [
    # model
    Rule(("threads",), lambda v: v >= 0, "must be >= 0"),
    # data
    Rule(("cutoff_len",), lambda v: v >= 2, "must be >= 2"),
    Rule(("max_source_len",), _opt(lambda v: v >= 1), "must be >= 1"),
    Rule(("max_target_len",), _opt(lambda v: v >= 1), "must be >= 1"),
    Rule(
        ("val_size",),
        lambda v: v >= 0 and (v < 1 or float(v).is_integer()),
        "must be a fraction in [0, 1) or a whole number of records",
    ),
    Rule(("preprocessing_num_workers",), lambda v: v >= 0, "must be >= 0"),
    Rule(
        ("template",),
        lambda v: v == "auto" or v in TEMPLATE_NAMES or _is_file(v),
        f"must be auto, a built-in template ({', '.join(TEMPLATE_NAMES)}) or an existing "
        "Jinja file",
    ),
    Rule(("data",), lambda v: all(s.weight > 0 for s in v), "weights must all be > 0"),
    Rule(
        ("data",),
        lambda v: all(s.max_samples is None or s.max_samples >= 1 for s in v),
        "max_samples must all be >= 1",
    ),
    # methods
    Rule(("lora_rank",), lambda v: v >= 1, "must be >= 1"),
    Rule(("lora_alpha",), _opt(lambda v: v > 0), "must be > 0"),
    Rule(("lora_dropout",), lambda v: 0 <= v < 1, "must be in [0, 1)"),
    Rule(("lora_target",), lambda v: len(v) >= 1, "must name at least one module"),
    Rule(("pre_seq_len",), lambda v: v >= 1, "must be >= 1"),
    Rule(("prompt_encoder_hidden_size",), _opt(lambda v: v >= 1), "must be >= 1"),
    Rule(("adalora_target_r",), lambda v: v >= 1, "must be >= 1"),
    Rule(
        ("adalora_init_r", "adalora_target_r"),
        lambda i, t: i >= t,
        "adalora_init_r must be >= adalora_target_r",
    ),
    Rule(("adalora_tinit",), lambda v: v >= 0, "must be >= 0"),
    Rule(("adalora_tfinal",), lambda v: v >= 0, "must be >= 0"),
    Rule(("adalora_delta_t",), lambda v: v >= 1, "must be >= 1"),
    Rule(("adalora_total_step",), _opt(lambda v: v >= 1), "must be >= 1"),
    Rule(("adalora_orth_reg_weight",), lambda v: v >= 0, "must be >= 0"),
    Rule(
        ("ia3_target", "ia3_feedforward"),
        lambda t, f: set(f) <= set(t),
        "ia3_feedforward must be a subset of ia3_target",
    ),
    # training
    Rule(("learning_rate",), lambda v: v > 0, "must be > 0"),
    Rule(("num_train_epochs",), lambda v: v > 0, "must be > 0"),
    Rule(("max_steps",), lambda v: v == -1 or v >= 1, "must be -1 or >= 1"),
    Rule(("per_device_train_batch_size",), lambda v: v >= 1, "must be >= 1"),
    Rule(("per_device_eval_batch_size",), lambda v: v >= 1, "must be >= 1"),
    Rule(("gradient_accumulation_steps",), lambda v: v >= 1, "must be >= 1"),
    Rule(("warmup_ratio",), lambda v: 0 <= v < 1, "must be in [0, 1)"),
    Rule(("warmup_steps",), lambda v: v >= 0, "must be >= 0"),
    Rule(("weight_decay",), lambda v: v >= 0, "must be >= 0"),
    Rule(("max_grad_norm",), lambda v: v >= 0, "must be >= 0"),
    Rule(("bf16", "fp16"), lambda a, b: not (a and b), "cannot both be true"),
    Rule(
        ("method", "quantization_bit"),
        lambda m, q: m != "qlora" or q is not None,
        "qlora needs quantization_bit: 4 or 8",
    ),
    Rule(
        ("packing", "method"),
        lambda p, m: not p or m not in ("prefix", "ptuning_v2", "prompt", "ptuning"),
        "packing cannot be used with prompt-learning methods (their virtual tokens belong to one "
        "sample per row)",
    ),
    Rule(("new_tokens",), lambda v: all(t.strip() for t in v), "must not contain empty tokens"),
    # preference stages
    Rule(
        ("packing", "stage"),
        lambda p, s: not p or s in ("pt", "sft"),
        "packing works for pt and sft only: rm and dpo compare the two answers of a pair, kto "
        "pairs answers with other prompts and grpo generates, which packed rows would mix",
    ),
    Rule(
        ("pref_beta", "stage"),
        lambda b, s: b > 0 or (s == "grpo" and b == 0),
        "pref_beta must be > 0 (0 only for grpo: no KL term, no reference)",
    ),
    Rule(
        ("precompute_ref_log_probs", "stage"),
        lambda p, s: not p or s == "dpo",
        "precompute_ref_log_probs works for stage dpo only (kto's KL baseline pairs answers "
        "batch by batch, grpo scores fresh generations)",
    ),
    Rule(
        ("num_generations",),
        lambda v: v >= 2,
        "must be >= 2 (advantages compare the answers to one prompt)",
    ),
    Rule(("max_completion_length",), lambda v: v >= 1, "must be >= 1"),
    Rule(("grpo_temperature",), lambda v: v > 0, "must be > 0"),
    Rule(("reward_funcs",), lambda v: len(v) >= 1, "must name at least one reward function"),
    Rule(
        ("reward_weights", "reward_funcs"),
        lambda w, f: w is None or len(w) == len(f),
        "reward_weights needs one weight per reward function",
    ),
    Rule(
        ("stage", "method"),
        lambda s, m: s != "grpo" or m not in ("prefix", "ptuning_v2", "prompt", "ptuning"),
        "stage grpo generates with transformers' generate, which does not keep prompt-learning "
        "adapters' virtual tokens; use lora, qlora, ia3, adalora, freeze or full",
    ),
    Rule(
        ("stage", "distributed", "deepspeed"),
        lambda s, d, ds: (
            s != "grpo" or (d != "fsdp" and ds not in ("zero3", "zero3_offload", "zero3_nvme"))
        ),
        "stage grpo samples from the whole model on every rank: use ddp or ZeRO-1/2 (FSDP and "
        "ZeRO-3 shard the weights generation needs)",
    ),
    Rule(("vllm_gpu_memory_utilization",), lambda v: 0 < v < 1, "must be in (0, 1)"),
    Rule(
        ("use_vllm", "stage"),
        lambda u, s: not u or s == "grpo",
        "use_vllm is grpo's sampler; other stages do not generate",
    ),
    Rule(("kto_chosen_weight",), lambda v: v > 0, "must be > 0"),
    Rule(("kto_rejected_weight",), lambda v: v > 0, "must be > 0"),
    Rule(("pref_ftx",), lambda v: v >= 0, "must be >= 0"),
    Rule(("simpo_gamma",), lambda v: v >= 0, "must be >= 0"),
    # distributed
    Rule(("nproc_per_node",), lambda v: v >= 1, "must be >= 1"),
    Rule(("nnodes",), _opt(lambda v: v >= 1), "must be >= 1"),
    Rule(("node_rank",), _opt(lambda v: v >= 0), "must be >= 0"),
    Rule(
        ("node_rank", "nnodes"),
        lambda r, n: r is None or r < (n or 1),
        "node_rank must be < nnodes (ranks count from 0)",
    ),
    Rule(("master_port",), _opt(lambda v: 1 <= v <= 65535), "must be in 1..65535"),
    Rule(("ddp_timeout",), lambda v: v >= 1, "must be >= 1"),
    Rule(
        ("deepspeed",),
        _opt(lambda v: v in DEEPSPEED_PRESETS or (v.endswith(".json") and _is_file(v))),
        f"must be a preset ({', '.join(DEEPSPEED_PRESETS)}) or an existing .json file",
    ),
    Rule(
        ("distributed", "deepspeed"),
        lambda d, ds: d != "deepspeed" or ds is not None,
        "distributed: deepspeed needs deepspeed: a preset (zero1, zero2, zero2_offload, zero3, "
        "zero3_offload, zero3_nvme) or a JSON file",
    ),
    Rule(
        ("distributed", "deepspeed"),
        lambda d, ds: ds is None or d in ("auto", "deepspeed"),
        "deepspeed is set, so distributed must be auto or deepspeed",
    ),
    Rule(
        ("deepspeed", "quantization_bit"),
        lambda ds, q: q is None or ds not in ("zero3", "zero3_offload", "zero3_nvme"),
        "ZeRO-3 shards every parameter, and a 4/8-bit bitsandbytes base cannot be sharded; use "
        "zero2 (or zero2_offload) with qlora",
    ),
    Rule(
        ("distributed", "quantization_bit"),
        lambda d, q: q is None or d != "fsdp",
        "FSDP cannot shard a 4/8-bit bitsandbytes base in this version; use ddp or deepspeed: "
        "zero2 with qlora",
    ),
    Rule(
        ("distributed", "fsdp_offload"),
        lambda d, o: not o or d == "fsdp",
        "fsdp_offload needs distributed: fsdp (with DeepSpeed use zero2_offload/zero3_offload)",
    ),
    Rule(
        ("distributed", "fsdp_sharding"),
        lambda d, s: s == "full_shard" or d == "fsdp",
        "fsdp_sharding needs distributed: fsdp",
    ),
    # evaluation (danlu eval)
    Rule(
        ("eval_task",),
        lambda v: (
            set(v) <= {"generation", "multiple_choice", "perplexity", "preference", "retrieval"}
        ),
        "must list only generation, multiple_choice, perplexity, preference, retrieval",
    ),
    Rule(
        ("eval_task", "retrieval_data"),
        lambda t, d: "retrieval" not in t or d is not None,
        "retrieval needs retrieval_data (question -> source jsonl) and an index (rag_index)",
    ),
    Rule(
        ("eval_data",),
        lambda v: all(s.max_samples is None or s.max_samples >= 1 for s in v),
        "max_samples must all be >= 1",
    ),
    Rule(
        ("eval_models",),
        lambda v: len({m.name for m in v if m.name}) == len([m for m in v if m.name]),
        "names must be unique",
    ),
    Rule(("n_shot",), lambda v: v >= 0, "must be >= 0"),
    Rule(("eval_max_samples",), _opt(lambda v: v >= 1), "must be >= 1"),
    Rule(("eval_max_new_tokens",), lambda v: v >= 1, "must be >= 1"),
    Rule(("eval_temperature",), lambda v: v > 0, "must be > 0"),
    Rule(("eval_top_p",), lambda v: 0 < v <= 1, "must be in (0, 1]"),
    Rule(
        ("eval_task", "mc_data"),
        lambda t, m: "multiple_choice" not in t or m is not None,
        "multiple_choice needs mc_data",
    ),
    Rule(
        ("eval_task", "eval_data"),
        lambda t, d: not ({"generation", "perplexity", "preference"} & set(t)) or bool(d),
        "generation, perplexity and preference need eval_data",
    ),
    Rule(
        ("n_shot", "mc_dev"),
        lambda n, d: n == 0 or d is not None,
        "n_shot > 0 needs mc_dev (the file the examples come from)",
    ),
    # knowledge base (danlu rag)
    Rule(("embedding_batch_size",), lambda v: v >= 1, "must be >= 1"),
    Rule(("chunk_size",), lambda v: v >= 16, "must be >= 16"),
    Rule(
        ("chunk_size", "chunk_overlap"),
        lambda s, o: 0 <= o < s // 2,
        "chunk_overlap must be in [0, chunk_size / 2)",
    ),
    Rule(
        ("chunk_size", "parent_chunk_size"),
        lambda s, p: p == 0 or p > s,
        "parent_chunk_size must be 0 (off) or more than chunk_size",
    ),
    Rule(("top_k",), lambda v: v >= 1, "must be >= 1"),
    Rule(
        ("store", "pg_dsn"),
        lambda s, d: s != "pgvector" or bool(d),
        "store pgvector needs pg_dsn (postgresql://user@host:port/db)",
    ),
    Rule(("rrf_k",), lambda v: v >= 1, "must be >= 1"),
    Rule(
        ("reranker",),
        _opt(lambda v: Path(v).expanduser().is_dir()),
        "must be a local cross-encoder folder (danlu never downloads)",
    ),
    Rule(("rag_max_new_tokens",), lambda v: v >= 1, "must be >= 1"),
    Rule(
        ("rag_template",),
        _opt(lambda v: _is_file(v) or ("{context}" in v and "{question}" in v)),
        "must be a file, or a text with {context} and {question}",
    ),
    # output
    Rule(("logging_steps",), lambda v: v >= 1, "must be >= 1"),
    Rule(("save_steps",), lambda v: v >= 1, "must be >= 1"),
    Rule(("save_total_limit",), _opt(lambda v: v >= 1), "must be >= 1"),
    Rule(("eval_steps",), _opt(lambda v: v >= 1), "must be >= 1"),
]


def violations(values: dict[str, Any]) -> list[tuple[Rule, str]]:
    """Rules broken by a flat key -> value mapping, each with its one-line message."""
    broken = []
    for rule in RULES:
        if not all(k in values for k in rule.keys):
            continue
        args = [values[k] for k in rule.keys]
        if not rule.ok(*args):
            broken.append((rule, _message(rule, args)))
    return broken


def _message(rule: Rule, args: list[Any]) -> str:
    if len(rule.keys) == 1:
        shown = args[0] if rule.keys[0] != "data" else "..."
        return f"{rule.keys[0]} {rule.must}, got {shown!r}"
    pairs = ", ".join(f"{k}={v!r}" for k, v in zip(rule.keys, args, strict=True))
    return f"{pairs}: {rule.must}"
