"""`danlu train`: the one engine for every stage and method (DESIGN §5).

config -> run dir checks -> model (+ added tokens) -> data (+ packing / length grouping) ->
method.prepare -> DanluTrainer (checkpoints, metrics, MFU) -> final/. Every step reports what it
did in one line, so a log shows which method, how many parameters and which data really ran.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danlu.config import Config, save_config
from danlu.data.collate import Collator, KtoCollator, PairCollator, PromptCollator
from danlu.data.pack import PackCollator, pack_dataset, with_lengths
from danlu.methods import registry
from danlu.models.device import pick_device
from danlu.models.load import load_model
from danlu.models.vocab import extend_vocabulary, read_new_tokens
from danlu.train.args import dist_strategy, training_arguments
from danlu.train.checkpoint import check_resumable
from danlu.train.dsconfig import deepspeed_config
from danlu.train.fsdp import check_method, shard
from danlu.train.inputs import check_inputs
from danlu.train.launch import nccl_env
from danlu.train.memcheck import is_oom, oom_message, preflight
from danlu.train.meter import build_meter
from danlu.train.rundir import check_run_dir, prepare_run_dir, save_final
from danlu.train.stages import (
    MIXINS,
    Stage,
    frozen_copy,
    get_stage,
    precompute_reference,
    reference_kind,
    stage_setup,
)
from danlu.train.trainer import build_trainer
from danlu.utils.dist import barrier, broadcast_object, is_main, local_world_size, world_size
from danlu.utils.errors import RuntimeFailure, UsageError
from danlu.utils.fs import publish

Log = Callable[[str], None]


@dataclass
class TrainResult:
    run_dir: Path
    final_dir: Path
    global_step: int
    train_loss: float
    trained_tokens: int
    tokens: int
    """All input tokens this process trained on (padding excluded; labelled or not)."""
    resumed_from: Path | None
    runtime_s: float
    """Seconds inside the training loop (model loading and data preparation excluded)."""


def train(cfg: Config, log: Log = print) -> TrainResult:
    """Run the training described by `cfg` and return where its results are.

    Under a launcher (torchrun, accelerate, deepspeed) this is one rank of the job: rank 0 alone
    checks and writes the run directory and tokenises the data into the cache (the other ranks
    wait, then read the cache: no rank holds a second copy of the corpus), every rank trains.
    """
    stage = get_stage(cfg.stage)
    job = _start(cfg, log if is_main() else _quiet)
    cfg, log = job.cfg, job.log
    loaded = load_model(_model_args(cfg, job.strategy), for_training=True, head=stage.head)
    model, tokenizer = loaded.model, loaded.tokenizer
    _add_tokens(cfg, model, tokenizer, log)
    with job.args.main_process_first(local=False, desc="tokenise data"):
        train_ds, eval_ds, report = _data(cfg, tokenizer, log)
    reference = reference_kind(cfg, registry.get_method(cfg.method).is_adapter)
    ref_model = frozen_copy(model) if reference == "copy" else None  # before any training
    model = _prepare_method(cfg, model, len(train_ds), log)
    if reference == "precomputed":
        train_ds, eval_ds = _precompute(cfg, model, tokenizer, train_ds, eval_ds, log)
    if job.strategy == "fsdp":
        model = _shard(cfg, model, job.args.device.type, log)
    _commit_run_dir(job, report)
    trainer = _trainer(
        cfg,
        model,
        tokenizer,
        train_ds,
        eval_ds,
        job.run_dir,
        job.args,
        (stage, reference, ref_model),
    )
    if job.resume is not None:
        log(f"resume: from {job.resume}")
    output = _run(trainer, cfg, job.resume)
    is_adapter = registry.get_method(cfg.method).is_adapter
    final = _save_final(trainer, job.strategy, job.run_dir, is_adapter)
    log(f"final: {final} (step {trainer.state.global_step}, train loss {output.training_loss:.4f})")
    return TrainResult(
        job.run_dir,
        final,
        trainer.state.global_step,
        output.training_loss,
        trainer.meter.trained_tokens,
        trainer.meter.tokens,
        job.resume,
        output.metrics.get("train_runtime", 0.0),
    )


@dataclass
class _Job:
    cfg: Config
    """As run (after auto_batch_size)."""
    log: Log
    strategy: str
    run_dir: Path
    args: Any
    """TrainingArguments; creating them started the process group."""
    resume: Path | None
    ds_config: dict | None = None


def _start(cfg: Config, log: Log) -> _Job:
    """Strategy, process group, run directory and resume point, before any heavy loading."""
    strategy = dist_strategy(cfg)
    os.environ.update(nccl_env(cfg))  # before the process group starts
    run_dir = Path(cfg.output_dir).expanduser()
    _seed(cfg.seed)
    device = pick_device(cfg.device).type  # on the CPU, also quiets DeepSpeed's no-GPU warning
    if is_main():  # reads only: nothing is written into output_dir before every check passed
        check_inputs(cfg)
    _warn_slow_bf16(cfg, device, log)
    cfg = preflight(cfg, device, log)
    # TrainingArguments start the process group, and (ZeRO-3) make from_pretrained shard at load.
    ds_config = _deepspeed(cfg, run_dir)
    args = training_arguments(cfg, run_dir, device, cfg.val_size > 0, ds_config)
    # After the process group exists: every rank must get rank 0's answer.
    resume = broadcast_object(_check_run_dir(cfg, run_dir) if is_main() else None)
    if resume is not None:
        check_resumable(resume, strategy, world_size())
    if strategy != "none":
        log(f"distributed: {strategy}, {world_size()} processes ({args.ddp_backend or 'auto'})")
    if strategy == "deepspeed":
        _init_deepspeed(args.ddp_backend)
    return _Job(cfg, log, strategy, run_dir, args, resume, ds_config)


def _warn_slow_bf16(cfg: Config, device: str, log: Log) -> None:
    """bf16 autocast on a CPU without bf16 instructions emulates every matmul (measured here on
    an AMD EPYC without AVX512-BF16: 0.8 GFLOP/s against 180 in float32): say so, once."""
    from danlu.utils.envinfo import cpu_bf16

    if cfg.bf16 and device == "cpu" and not cpu_bf16():
        log(
            "warning: bf16: this CPU has no bfloat16 instructions (AVX512-BF16/AMX), so bf16 "
            "autocast runs far slower than float32 here; set bf16: false"
        )


def _commit_run_dir(job: _Job, report: Any) -> None:
    """The run's first writes into output_dir, once the model, the data and the method are
    ready: the old run's files made way (overwrite / restart) or cut back (resume), then the
    config as run (after auto_batch_size), the DeepSpeed config and the data report."""
    from danlu.data import save_report

    if is_main():
        prepare_run_dir(job.run_dir, job.resume)
        save_config(job.cfg, job.run_dir / "config.yaml")
        if job.ds_config is not None:
            text = json.dumps(job.ds_config, indent=2) + "\n"
            (job.run_dir / "deepspeed.json").write_text(text)
        save_report(report, job.run_dir)
    barrier()  # no rank writes (TensorBoard, checkpoints) before the folder is ready


def _prepare_method(cfg: Config, model: Any, rows: int, log: Log) -> Any:
    steps = _total_steps(cfg, rows, world_size())
    copies = cfg.gradient_accumulation_steps * world_size()
    model = registry.prepare(model, cfg, total_steps=steps, loss_copies=copies)
    trainable, total, pct = registry.trainable_summary(model)
    log(f"method: {cfg.method}: training {trainable:,} of {total:,} parameters ({pct:.4f}%)")
    return model


def _quiet(_: str) -> None:
    """The log of ranks other than 0: one rank speaks for the job."""


def _check_run_dir(cfg: Config, run_dir: Path) -> Path | None:
    return check_run_dir(run_dir, cfg.resume_from_checkpoint, cfg.overwrite_output_dir)


def _deepspeed(cfg: Config, run_dir: Path) -> dict | None:
    return deepspeed_config(cfg, world_size(), run_dir) if cfg.deepspeed else None


def _init_deepspeed(backend: str | None) -> None:
    """DeepSpeed's own view of the process group, before ZeRO-3 partitions the model at load
    (without it, zero.Init counts one process and rejects the global batch)."""
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend or "nccl")


def _shard(cfg: Config, model: Any, device: str, log: Log) -> Any:
    check_method(cfg.method)
    if cfg.fsdp_offload and device == "cpu":
        raise UsageError(
            "fsdp_offload: on a CPU run the shards already live in CPU memory; it is for GPUs"
        )
    import torch

    topo_nodes = max(world_size() // max(local_world_size(), 1), 1)
    dtype = torch.bfloat16 if cfg.bf16 else None  # fp16 keeps autocast + loss scaling
    model = shard(model, cfg.fsdp_sharding, cfg.fsdp_offload, topo_nodes, device, dtype)
    offload = ", parameters offloaded to CPU" if cfg.fsdp_offload else ""
    log(f"fsdp: {cfg.fsdp_sharding} over {world_size()} processes{offload}")
    return model


def _save_final(trainer: Any, strategy: str, run_dir: Path, is_adapter: bool) -> Path:
    """`final/`. A sharded model (ZeRO, FSDP) is gathered by every rank and written by rank 0."""
    if strategy in ("none", "ddp"):
        if not trainer.args.should_save:
            return run_dir / "final"
        return save_final(trainer.model, trainer.processing_class, run_dir, is_adapter)
    staged = run_dir / ".final.staging"
    if trainer.args.should_save:  # a run killed while publishing must not leak files into this one
        shutil.rmtree(staged, ignore_errors=True)
    barrier()
    trainer.save_model(str(staged))
    barrier()
    if trainer.args.should_save:
        trainer.processing_class.save_pretrained(str(staged))
        publish(staged, run_dir / "final")
    barrier()
    return run_dir / "final"


def _model_args(cfg: Config, strategy: str) -> Any:
    """ModelArgs for training. With bf16 and an adapter method, the frozen base is loaded in
    bfloat16 (as LLaMA-Factory does): autocast would otherwise re-cast every fp32 weight to bf16
    in every forward, and the fp32 copy doubles weight memory. Adapters stay fp32 (peft upcasts
    them) and full/freeze training keeps fp32 weights for the optimizer."""
    import dataclasses

    args = cfg.section("model")
    adapter = registry.get_method(cfg.method).is_adapter and cfg.method != "qlora"
    # FSDP2 gathers one dtype per block: a bf16 base beside fp32 adapters would not shard.
    if args.model_dtype == "auto" and cfg.bf16 and adapter and strategy != "fsdp":
        return dataclasses.replace(args, model_dtype="bfloat16")
    return args


def _run(trainer: Any, cfg: Config, resume: Path | None) -> Any:
    try:
        return trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except (RuntimeError, MemoryError) as exc:
        if isinstance(exc, MemoryError) or is_oom(exc):
            device = trainer.args.device.type
            raise RuntimeFailure(oom_message(cfg, device, trainer.state.global_step, exc)) from exc
        raise


def _precompute(
    cfg: Config, model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any, log: Log
) -> tuple[Any, Any]:
    """dpo with precompute_ref_log_probs: the reference's log-probs, once, before training."""
    collate, size = _collator(cfg, model, tokenizer, "pairs"), cfg.per_device_eval_batch_size
    train_ds = precompute_reference(model, train_ds, collate, size)
    if eval_ds is not None:
        eval_ds = precompute_reference(model, eval_ds, collate, size)
    log(f"reference: log-probabilities of {len(train_ds)} pairs computed; no reference model kept")
    return train_ds, eval_ds


def _seed(seed: int) -> None:
    # Before the method builds its adapter: LoRA/prefix/prompt weights are drawn at random, and
    # Trainer only seeds later; without this, the same config gives different runs per process.
    from transformers import set_seed

    set_seed(seed)


def _add_tokens(cfg: Config, model: Any, tokenizer: Any, log: Log) -> None:
    tokens = read_new_tokens(cfg.new_tokens, cfg.new_tokens_file)
    if tokens:
        added = extend_vocabulary(model, tokenizer, tokens)
        log(f"vocabulary: added {len(added)} of {len(tokens)} new tokens (now {len(tokenizer)})")


def _data(cfg: Config, tokenizer: Any, log: Log) -> tuple[Any, Any, Any]:
    from danlu.data import build_dataset

    train_ds, eval_ds, report = build_dataset(cfg, tokenizer, log=log)
    if len(train_ds) == 0:
        raise UsageError(
            "data: no training samples left after reading and truncation "
            f"(kept {report.get('kept', 0)}, dropped {report.get('dropped', {})}); "
            "`danlu data preview` shows why"
        )
    if cfg.packing:
        before = len(train_ds)
        train_ds = pack_dataset(train_ds, cfg.cutoff_len)
        eval_ds = pack_dataset(eval_ds, cfg.cutoff_len) if eval_ds is not None else None
        log(f"packing: {before} samples -> {len(train_ds)} rows of <= {cfg.cutoff_len} tokens")
    elif cfg.group_by_length:
        train_ds = with_lengths(train_ds)
    return train_ds, eval_ds, report


def _total_steps(cfg: Config, rows: int, world: int = 1) -> int:
    """Optimiser steps of the run, as Trainer will count them (each rank gets rows / world)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = math.ceil(math.ceil(rows / world) / cfg.per_device_train_batch_size)
    per_epoch = max(math.ceil(batches / cfg.gradient_accumulation_steps), 1)
    return math.ceil(per_epoch * cfg.num_train_epochs)


def _trainer(
    cfg: Config, model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any, run_dir: Path, args: Any,
    staged: tuple[Stage, str, Any],
) -> Any:  # fmt: skip
    if cfg.eval_steps is not None and eval_ds is None:
        raise UsageError("eval_steps: there is no held-out data; set val_size (e.g. 0.05)")
    method = registry.get_method(cfg.method)
    stage, reference, ref_model = staged
    setup = stage_setup(
        cfg, reference, ref_model, tokenizer, getattr(model, "generation_config", None)
    )
    return build_trainer(
        stage_loss=MIXINS[stage.loss] if stage.loss else None,
        stage_setup=setup,
        run_dir=run_dir,
        meter=build_meter(cfg, model, train_ds, args.device.type, reference),
        keep=cfg.save_total_limit,
        on_step=method.on_step,
        is_adapter=method.is_adapter,
        hybrid_shard=cfg.fsdp_sharding == "hybrid_shard" and local_world_size() < world_size(),
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=_collator(cfg, model, tokenizer, stage.batches),
        processing_class=tokenizer,
    )


def _collator(cfg: Config, model: Any, tokenizer: Any, batches: str = "plain") -> Any:
    # Multiples of 8 keep tensor-core (and AMX tile) shapes aligned on GPUs and CPUs alike.
    if batches in STAGE_COLLATORS:
        return STAGE_COLLATORS[batches](tokenizer.pad_token_id, pad_to_multiple_of=8)
    if cfg.packing:
        mask = cfg.packing_mask
        if mask == "auto":
            mask = "4d" if cfg.trust_remote_code else "position_ids"
        dtype = next(model.parameters()).dtype
        return PackCollator(tokenizer.pad_token_id, mask=mask, pad_to_multiple_of=8, dtype=dtype)
    return Collator(tokenizer.pad_token_id, pad_to_multiple_of=8)


STAGE_COLLATORS = {"pairs": PairCollator, "kto": KtoCollator, "grpo": PromptCollator}
