"""`danlu estimate`: per-device memory breakdown of a training or inference setup."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from typing import Any

from danlu.plan import Setup, estimate, load_arch
from danlu.plan.render import estimate_table
from danlu.plan.setup import DTYPE_BYTES, METHODS, OPTIMIZER_BYTES
from danlu.utils.errors import UsageError

_FSDP = {"full_shard": 3, "shard_grad_op": 2}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, method, precision and batch flags shared by `estimate` and `plan`."""
    a = parser.add_argument
    a(
        "--model",
        default=None,
        help="known name (llama2-7b, qwen2.5-7b, chatglm3-6b, ...), HF "
        "folder or config.json, .gguf file, or hub id (default: the config's model, else smollm2-135m-instruct)",
    )
    a(
        "--config",
        metavar="CONFIG",
        help="danlu run config to take model/method/batch/... from; flags override it",
    )
    a("--method", choices=METHODS, help="fine-tuning method (default lora)")
    a("--lora-rank", type=int, help="LoRA rank r (default 8)")
    a("--lora-target", help="comma-separated modules, e.g. q_proj,v_proj (default all-linear)")
    a(
        "--pre-seq-len",
        type=int,
        help="virtual tokens of prefix/ptuning_v2/prompt/ptuning (default 128)",
    )
    a(
        "--prefix-projection",
        action="store_true",
        default=None,
        help="prefix reparameterisation MLP",
    )
    a("--freeze-layers", type=int, help="freeze: trained last N blocks (default 2)")
    a("--weights", choices=list(DTYPE_BYTES), help="weight precision (default bf16; qlora: int4)")
    a("--optim", choices=list(OPTIMIZER_BYTES), help="optimizer (default adamw: fp32 m and v)")
    a("--no-master", action="store_true", help="no fp32 master copy of 16-bit trained weights")
    a("--batch", type=int, help="micro-batch per device (default 1)")
    a("--seq", type=int, help="sequence length / context (default 1024)")
    a("--accum", type=int, help="gradient accumulation steps (default 1)")
    a("--gc", action="store_true", default=None, help="gradient checkpointing")
    a("--attention", choices=["sdpa", "eager"], help="sdpa/flash (default) or eager (saves B·a·S²)")
    a(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cuda (default) or cpu (no CUDA context, fp32 default)",
    )
    a(
        "--overhead-gb",
        type=float,
        help="framework memory outside tensors (default 1.3 GB on cuda, 0 on cpu)",
    )


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """Setup fields given on the command line (unset flags are None and left out)."""
    out = {
        "method": args.method,
        "lora_rank": args.lora_rank,
        "pre_seq_len": args.pre_seq_len,
        "prefix_projection": args.prefix_projection,
        "freeze_layers": args.freeze_layers,
        "weights": args.weights,
        "optimizer": args.optim,
        "micro_batch": args.batch,
        "seq_len": args.seq,
        "accumulation": args.accum,
        "grad_ckpt": args.gc,
        "attention": args.attention,
        "device": args.device,
        "lora_targets": tuple(args.lora_target.split(",")) if args.lora_target else None,
        "overhead": args.overhead_gb * 1e9 if args.overhead_gb is not None else None,
        "master_weights": False if args.no_master else None,
    }
    return {k: v for k, v in out.items() if v is not None}


def setup_from_args(args: argparse.Namespace, **extra: Any) -> tuple[str, Setup]:
    """(model spec, Setup): defaults < --config < flags < `extra`."""
    fields_: dict[str, Any] = {}
    model = None
    if args.config:
        from danlu.config import load_config
        from danlu.plan.fromconfig import setup_from_config

        model, fields_ = setup_from_config(load_config(args.config, []))
    fields_.update(_flags(args))
    fields_.update(extra)
    if args.device == "cpu" and "weights" not in _flags(args) and not args.config:
        fields_["weights"] = "fp32"  # CPU training runs in fp32
    if fields_.get("method") == "qlora" and "weights" not in _flags(args):
        fields_["weights"] = "int4"
    known = {f.name for f in fields(Setup)}
    return args.model or model or "smollm2-135m-instruct", Setup(
        **{k: v for k, v in fields_.items() if k in known}
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    a = parser.add_argument
    a(
        "--stage",
        choices=["train", "infer"],
        default="train",
        help="training (default) or inference (KV cache)",
    )
    a(
        "--zero",
        type=int,
        choices=[0, 1, 2, 3],
        help="DeepSpeed ZeRO stage (partitions over --world)",
    )
    a(
        "--fsdp",
        choices=list(_FSDP),
        help="FSDP sharding (full_shard = ZeRO-3, shard_grad_op = ZeRO-2)",
    )
    a("--world", type=int, default=1, help="data-parallel GPUs (default 1)")
    a("--offload", choices=["none", "cpu", "nvme"], help="ZeRO optimizer-state offload")
    a("--offload-params", choices=["none", "cpu", "nvme"], help="ZeRO-3 parameter offload")
    a("--tp", type=int, default=1, help="tensor-parallel degree")
    a("--pp", type=int, default=1, help="pipeline-parallel degree")
    a("--json", action="store_true", help="print JSON (bytes) instead of a table")


def run(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {"stage": args.stage, "dp": args.world, "tp": args.tp, "pp": args.pp}
    if args.zero is not None or args.fsdp:
        extra["zero"] = _FSDP[args.fsdp] if args.fsdp else args.zero
    if args.offload:
        extra["offload_optimizer"] = args.offload
    if args.offload_params:
        extra["offload_params"] = args.offload_params
    for name in ("world", "tp", "pp", "batch", "seq", "accum", "lora_rank"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    model, setup = setup_from_args(args, **extra)
    est = estimate(load_arch(model), setup)
    print(
        json.dumps({**est.to_dict(), "setup": _plain(setup)}, indent=2)
        if args.json
        else estimate_table(est, setup)
    )
    return 0


def _plain(s: Setup) -> dict[str, Any]:
    return {
        f.name: (list(v) if isinstance(v := getattr(s, f.name), tuple) else v) for f in fields(s)
    }
