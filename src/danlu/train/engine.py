"""`danlu train`: the one engine for every stage and method (DESIGN §5).

config -> run dir checks -> model (+ added tokens) -> data (+ packing / length grouping) ->
method.prepare -> DanluTrainer (checkpoints, metrics, MFU) -> final/. Every step reports what it
did in one line, so a log shows which method, how many parameters and which data really ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danlu.config import Config, save_config
from danlu.data.collate import Collator
from danlu.data.pack import PackCollator, pack_dataset, token_lengths, with_lengths
from danlu.methods import registry
from danlu.models.device import pick_device
from danlu.models.load import load_model
from danlu.models.vocab import extend_vocabulary, read_new_tokens
from danlu.train.args import training_arguments
from danlu.train.flops import cpu_peak_flops, flops_model, gpu_peak_flops
from danlu.train.memcheck import is_oom, oom_message, preflight
from danlu.train.metrics import ThroughputMeter
from danlu.train.rundir import prepare_run_dir, save_final
from danlu.train.trainer import build_trainer
from danlu.utils.errors import RuntimeFailure, UsageError
from danlu.utils.system import danlu_home

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
    """Run the training described by `cfg` and return where its results are."""
    if cfg.stage not in ("pt", "sft"):
        raise UsageError(
            f"stage '{cfg.stage}': only pt and sft train in this version (rm/dpo next)"
        )
    if cfg.deepspeed:
        raise UsageError(
            "deepspeed: not supported yet in this version (use one device, or DDP via torchrun)"
        )
    run_dir = Path(cfg.output_dir).expanduser()
    resume = prepare_run_dir(run_dir, cfg.resume_from_checkpoint, cfg.overwrite_output_dir)
    _seed(cfg.seed)
    cfg = preflight(cfg, pick_device(cfg.device).type, log)
    save_config(cfg, run_dir / "config.yaml")  # as run: after auto_batch_size
    loaded = load_model(_model_args(cfg), for_training=True)
    model, tokenizer = loaded.model, loaded.tokenizer
    _add_tokens(cfg, model, tokenizer, log)
    train_ds, eval_ds = _data(cfg, tokenizer, run_dir, log)
    model = registry.prepare(model, cfg, total_steps=_total_steps(cfg, len(train_ds)))
    trainable, total, pct = registry.trainable_summary(model)
    log(f"method: {cfg.method}: training {trainable:,} of {total:,} parameters ({pct:.4f}%)")
    trainer = _trainer(cfg, model, tokenizer, train_ds, eval_ds, run_dir)
    if resume is not None:
        log(f"resume: from {resume}")
    output = _run(trainer, cfg, resume)
    method = registry.get_method(cfg.method)
    final = (
        save_final(model, tokenizer, run_dir, method.is_adapter)
        if trainer.args.should_save
        else run_dir / "final"
    )
    log(f"final: {final} (step {trainer.state.global_step}, train loss {output.training_loss:.4f})")
    return TrainResult(
        run_dir,
        final,
        trainer.state.global_step,
        output.training_loss,
        trainer.meter.trained_tokens,
        trainer.meter.tokens,
        resume,
        output.metrics.get("train_runtime", 0.0),
    )


def _model_args(cfg: Config) -> Any:
    """ModelArgs for training. With bf16 and an adapter method, the frozen base is loaded in
    bfloat16 (as LLaMA-Factory does): autocast would otherwise re-cast every fp32 weight to bf16
    in every forward, and the fp32 copy doubles weight memory. Adapters stay fp32 (peft upcasts
    them) and full/freeze training keeps fp32 weights for the optimizer."""
    import dataclasses

    args = cfg.section("model")
    adapter = registry.get_method(cfg.method).is_adapter and cfg.method != "qlora"
    if args.model_dtype == "auto" and cfg.bf16 and adapter:
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


def _data(cfg: Config, tokenizer: Any, run_dir: Path, log: Log) -> tuple[Any, Any]:
    from danlu.data import build_dataset, save_report

    train_ds, eval_ds, report = build_dataset(cfg, tokenizer, log=log)
    save_report(report, run_dir)
    if len(train_ds) == 0:
        raise UsageError(
            "data: no training samples left after reading and truncation "
            f"(see {run_dir / 'data_report.json'})"
        )
    if cfg.packing:
        before = len(train_ds)
        train_ds = pack_dataset(train_ds, cfg.cutoff_len)
        eval_ds = pack_dataset(eval_ds, cfg.cutoff_len) if eval_ds is not None else None
        log(f"packing: {before} samples -> {len(train_ds)} rows of <= {cfg.cutoff_len} tokens")
    elif cfg.group_by_length:
        train_ds = with_lengths(train_ds)
    return train_ds, eval_ds


def _total_steps(cfg: Config, rows: int) -> int:
    """Optimiser steps of the run, as Trainer will count them (one process)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = math.ceil(rows / cfg.per_device_train_batch_size)
    per_epoch = max(math.ceil(batches / cfg.gradient_accumulation_steps), 1)
    return math.ceil(per_epoch * cfg.num_train_epochs)


def _trainer(
    cfg: Config, model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any, run_dir: Path
) -> Any:
    device = model.device.type if hasattr(model, "device") else "cpu"
    args = training_arguments(cfg, run_dir, device, has_eval=eval_ds is not None)
    if cfg.eval_steps is not None and eval_ds is None:
        raise UsageError("eval_steps: there is no held-out data; set val_size (e.g. 0.05)")
    method = registry.get_method(cfg.method)
    return build_trainer(
        run_dir=run_dir,
        meter=_meter(cfg, model, train_ds, device),
        keep=cfg.save_total_limit,
        on_step=method.on_step,
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=_collator(cfg, model, tokenizer),
        processing_class=tokenizer,
    )


def _collator(cfg: Config, model: Any, tokenizer: Any) -> Any:
    # Multiples of 8 keep tensor-core (and AMX tile) shapes aligned on GPUs and CPUs alike.
    if cfg.packing:
        mask = cfg.packing_mask
        if mask == "auto":
            mask = "4d" if cfg.trust_remote_code else "position_ids"
        dtype = next(model.parameters()).dtype
        return PackCollator(tokenizer.pad_token_id, mask=mask, pad_to_multiple_of=8, dtype=dtype)
    return Collator(tokenizer.pad_token_id, pad_to_multiple_of=8)


def _meter(cfg: Config, model: Any, train_ds: Any, device: str) -> ThroughputMeter:
    """tokens/s and MFU: model FLOPs per token at the data's mean sample length over the peak."""
    per_token = flops_model(model).per_token(_mean_sample_len(train_ds))
    return ThroughputMeter(flops_per_token=per_token, peak_flops=_peak(cfg, device))


def _mean_sample_len(ds: Any) -> int:
    import pyarrow.compute as pc

    if "lengths" in ds.column_names:  # packed: attention spans one sample, not the whole row
        lengths = pc.list_flatten(ds.with_format("arrow")["lengths"])
    else:
        lengths = token_lengths(ds)
    return max(round(pc.mean(lengths).as_py() or 1), 1)


def _peak(cfg: Config, device: str) -> float | None:
    if device == "cuda":
        import torch

        return gpu_peak_flops(torch.cuda.get_device_name()) if (cfg.bf16 or cfg.fp16) else None
    if device == "cpu":
        dtype = "bfloat16" if cfg.bf16 else "float32"
        return cpu_peak_flops(dtype, cache_file=danlu_home() / "cpu_peak_flops.json")
    return None
