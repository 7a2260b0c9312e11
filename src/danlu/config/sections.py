"""The config sections, one dataclass per concern. Every field's docstring is its documentation.

Field names are the flat YAML keys; they follow LLaMA-Factory's names where those exist so a
user's existing configs read the same. Ranges and cross-key rules live in `rules.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from danlu.config.schema import section

TEMPLATE_NAMES = ("chatml", "qwen", "llama3", "llama2", "chatglm3", "alpaca", "default")
"""The built-in chat templates (danlu.data.templates_builtin has their sources)."""
DEEPSPEED_PRESETS = ("zero1", "zero2", "zero2_offload", "zero3", "zero3_offload", "zero3_nvme")
"""The DeepSpeed presets shipped as package data (danlu/train/deepspeed_presets/NAME.json)."""

FORMATS = Literal[
    "auto",
    "alpaca",
    "prompt_response",
    "conversations",
    "messages",
    "sharegpt",
    "text",
    "pairwise",
    "prompt",
]


@dataclass
class DataSource:
    """One entry of the `data:` list."""

    path: str
    """Local file (.json/.jsonl/.parquet/.csv/.txt), directory, glob, or a `datasets` name."""
    format: FORMATS = "auto"
    """Record shape; `auto` detects it from the first record and reports what it found."""
    weight: float = 1.0
    """Relative share when mixing several sources (domain 1 : general 5). Different weights are
    realised exactly (larger sources subsampled, seeded); equal weights use every sample."""
    columns: dict[str, str] = field(default_factory=dict)
    """Rename fields: {our_name: their_name}, e.g. {prompt: content, response: summary}."""
    split: str = "train"
    """Split to read when `path` is a `datasets` name."""
    max_samples: int | None = None
    """Use only the first N records of this source."""
    system: str | None = None
    """System prompt to add to every conversation of this source that has none."""


@section("model")
class ModelArgs:
    model: str = "smollm2-135m-instruct"
    """HF model folder, a .gguf file, a hub id (online only), or an embedded name
    (`smollm2-135m-instruct`)."""
    adapter: str | None = None
    """A PEFT adapter folder to load on top of `model` (to serve it, or continue training it)."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code. Off unless you trust the source."""
    allow_pickle: bool = False
    """Allow loading pickle (.bin/.pt) weights. Off: safetensors only."""
    model_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Dtype the weights are loaded in; `auto` = bfloat16 on GPUs that support it, else float32."""
    device: str = "auto"
    """`auto` (cuda when available, else cpu), `cpu`, `cuda`, `cuda:N` or `mps`."""
    device_map: str | None = None
    """`auto` spreads one model over all visible GPUs (inference). Respects CUDA_VISIBLE_DEVICES."""
    threads: int = 0
    """PyTorch CPU threads; 0 = the cores this process may really use (affinity and cgroup quota)."""
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = "auto"
    """Attention kernel; `auto` lets transformers choose (sdpa, or flash-attention when installed)."""
    quantization_bit: Literal[4, 8] | None = None
    """Load the base model quantised to 4 or 8 bits (QLoRA)."""
    quantization_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type for bitsandbytes quantisation."""
    new_tokens: list[str] = field(default_factory=list)
    """Tokens to add to the vocabulary (e.g. Chinese words for a LLaMA tokenizer); embeddings are
    resized and each new row starts as the mean of the rows of the pieces it used to split into."""
    new_tokens_file: str | None = None
    """A UTF-8 file with one new token per line (added after `new_tokens`)."""


@section("data")
class DataArgs:
    data: list[DataSource] = field(default_factory=list)
    """Data sources: a list of {path, format, weight, columns, ...} (or just paths)."""
    template: str = "auto"
    """Chat template: `auto` (the tokenizer's own), a built-in name (chatml, qwen, llama3, llama2,
    chatglm3, alpaca, default) or a path to a Jinja file."""
    cutoff_len: int = 1024
    """Maximum tokens per sample (prompt + answer) after truncation."""
    max_source_len: int | None = None
    """Cap on prompt tokens; the source is cut from the left."""
    max_target_len: int | None = None
    """Cap on answer tokens; the target is cut from the right."""
    train_on: Literal["all_turns", "last_turn"] = "all_turns"
    """Which assistant turns are trained: all of them, or only the last."""
    packing: bool = False
    """Concatenate samples up to `cutoff_len`; attention never crosses sample boundaries."""
    val_size: float = 0.0
    """Held-out split: a fraction (< 1) or a number of records (>= 1)."""
    on_bad_record: Literal["error", "skip"] = "error"
    """`error`: stop at the first bad record naming file:line. `skip`: skip it and count it."""
    preprocessing_num_workers: int = 0
    """Tokenisation worker processes; 0 = one per usable core."""
    data_cache: bool = True
    """Cache tokenised data on disk (under DANLU_HOME) and reuse it on the next run."""


@section("train")
class TrainArgs:
    stage: Literal["pt", "sft", "rm", "dpo", "kto", "ppo", "grpo"] = "sft"
    """pt: continued pretraining; sft: supervised fine-tuning; rm: reward model on pairs; dpo:
    preference optimisation on pairs (see pref_loss); kto, ppo, grpo: not built yet."""
    learning_rate: float = 1e-4
    """Peak learning rate."""
    num_train_epochs: float = 3.0
    """Epochs over the training data (ignored when max_steps > 0)."""
    max_steps: int = -1
    """Optimiser steps to run; -1 = derive from num_train_epochs."""
    per_device_train_batch_size: int = 4
    """Micro-batch size per device."""
    per_device_eval_batch_size: int = 8
    """Batch size per device for evaluation."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimiser step."""
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warmup."""
    warmup_ratio: float = 0.0
    """Fraction of steps spent warming up (used when warmup_steps is 0)."""
    warmup_steps: int = 0
    """Warmup steps (overrides warmup_ratio when > 0)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    optim: Literal["adamw_torch", "adamw_8bit", "sgd", "adafactor"] = "adamw_torch"
    """Optimiser."""
    seed: int = 42
    """Seed for initialisation, data order and dropout."""
    bf16: bool = False
    """bfloat16 mixed precision."""
    fp16: bool = False
    """float16 mixed precision with loss scaling."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    auto_batch_size: bool = False
    """Before loading the model, pick the largest micro-batch (<= per_device_train_batch_size) the
    memory estimate fits in this device's memory, raising gradient_accumulation_steps to keep
    the global batch. Off: the estimate only warns."""
    group_by_length: bool = False
    """Batch samples of similar length together to reduce padding."""
    packing_mask: Literal["auto", "position_ids", "4d"] = "auto"
    """How packed samples are kept apart: `position_ids` (restarting positions; flash-attention
    varlen / SDPA, no quadratic mask), `4d` (block-diagonal mask; any model), `auto` = position_ids
    for models transformers implements natively, 4d for trust_remote_code models."""
    resume_from_checkpoint: str | None = None
    """A checkpoint folder, or `auto` for the newest complete one in output_dir."""


@section("distributed")
class DistArgs:
    distributed: Literal["auto", "ddp", "fsdp", "deepspeed"] = "auto"
    """Strategy when several processes train: `ddp` (a full replica per process), `fsdp` (PyTorch
    FSDP2: weights, gradients and optimizer states sharded), `deepspeed` (ZeRO, see `deepspeed`);
    `auto` = deepspeed when `deepspeed` is set, else ddp."""
    deepspeed: str | None = None
    """DeepSpeed config: a preset shipped with danlu (zero1, zero2, zero2_offload, zero3,
    zero3_offload, zero3_nvme) or a JSON file; its `auto` values are filled from this config."""
    deepspeed_flops_profiler: bool = False
    """Turn on DeepSpeed's flops profiler: per-module FLOPs, latency and FLOPS of one early step,
    written to OUTPUT_DIR/flops_profile.txt."""
    nvme_path: str = "/local_nvme"
    """`zero3_nvme`: a fast local disk folder the parameters and optimizer states are paged to."""
    nproc_per_node: int = 1
    """Processes (GPUs) per node. > 1: `danlu train` relaunches itself under torchrun."""
    nnodes: int | None = None
    """Nodes in the job; default $NNODES, else 1."""
    node_rank: int | None = None
    """This node's index (0 = the master node); default $NODE_RANK, else 0."""
    master_addr: str | None = None
    """The master node's IP address; default $MASTER_ADDR, else 127.0.0.1."""
    master_port: int | None = None
    """Rendezvous port on the master node; default $MASTER_PORT, else 29500 (one node: a free port)."""
    hostfile: str | None = None
    """A DeepSpeed-style hostfile (`IP slots=N` per line): sets nnodes, master_addr and
    nproc_per_node, and `--print-launch` prints the command for each node."""
    ddp_backend: Literal["auto", "nccl", "gloo"] = "auto"
    """torch.distributed backend; `auto` = nccl on GPUs, gloo on CPU."""
    ddp_timeout: int = 1800
    """Seconds a collective may wait (e.g. ranks waiting while rank 0 tokenises the data)."""
    fsdp_sharding: Literal["full_shard", "shard_grad_op", "hybrid_shard"] = "full_shard"
    """`fsdp`: full_shard (ZeRO-3-like, weights re-gathered per forward and backward),
    shard_grad_op (ZeRO-2-like, weights kept gathered between forward and backward), hybrid_shard
    (full_shard inside a node, replicas across nodes: less inter-node traffic)."""
    fsdp_offload: bool = False
    """`fsdp`: keep sharded parameters, gradients and optimizer step in CPU memory."""
    nccl_ib_disable: bool | None = None
    """Set NCCL_IB_DISABLE: true when nodes have no working InfiniBand/RoCE (hangs at init)."""
    nccl_socket_ifname: str | None = None
    """Set NCCL_SOCKET_IFNAME: the network interface nodes reach each other on (e.g. eth0), when
    NCCL picks one the other nodes cannot reach (docker0, lo)."""
    nccl_p2p_disable: bool | None = None
    """Set NCCL_P2P_DISABLE: true on GPUs whose peer-to-peer path hangs or corrupts (some
    consumer cards, some virtualised hosts)."""
    nccl_debug: Literal["VERSION", "WARN", "INFO", "TRACE"] | None = None
    """Set NCCL_DEBUG: INFO prints the transport and interface each rank chose."""


@section("output")
class OutputArgs:
    output_dir: str = "runs/danlu"
    """Run directory: config.yaml, metrics.jsonl, checkpoints/, final/ (DESIGN §5)."""
    overwrite_output_dir: bool = False
    """Allow writing into a non-empty output_dir that is not being resumed."""
    logging_steps: int = 10
    """Log metrics every N optimiser steps."""
    save_steps: int = 500
    """Save a resumable checkpoint every N optimiser steps."""
    save_total_limit: int | None = None
    """Keep at most N checkpoints (oldest deleted first)."""
    eval_steps: int | None = None
    """Evaluate on the held-out split every N steps."""
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    """Where metrics go besides metrics.jsonl."""
