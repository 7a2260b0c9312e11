"""danlu config -> transformers `TrainingArguments`: the one place the two vocabularies meet.

Most keys share LLaMA-Factory's (and so transformers') names; what differs is decided here:
the optimiser names, where checkpoints and TensorBoard go (the run layout of DESIGN §5 instead of
Trainer's `checkpoint-N` folders), and mixed precision on CPU (bf16 autocast, which on CPUs with
AVX512-BF16/AMX runs matmuls about 1.5-3x faster than fp32).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from danlu.models.compat import checkpointing_fields
from danlu.utils.errors import UsageError

OPTIMIZERS = {
    "adamw_torch": "adamw_torch",
    "adamw_8bit": "adamw_bnb_8bit",
    "sgd": "sgd",
    "adafactor": "adafactor",
}


def dist_strategy(cfg: Any) -> str:
    """none (one process) | ddp | fsdp | deepspeed, from `distributed` and the launcher's world."""
    from danlu.utils.dist import world_size

    if cfg.distributed == "deepspeed" or (cfg.distributed == "auto" and cfg.deepspeed):
        return "deepspeed"
    if world_size() == 1:
        return "none"
    return "ddp" if cfg.distributed == "auto" else cfg.distributed


def training_arguments(
    cfg: Any, run_dir: Path, device: str, has_eval: bool, deepspeed: dict | None = None
) -> Any:
    """TrainingArguments for `cfg`, writing into `run_dir` (`deepspeed`: the resolved config)."""
    from transformers import TrainingArguments

    _check_precision(cfg, device)
    # TensorBoard's callback reads its folder from the environment in transformers 5.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tb")
    evaluating = has_eval and cfg.eval_steps is not None
    return TrainingArguments(
        output_dir=str(run_dir),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps > 0 else cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm > 0 else 0.0,
        optim=_optimizer(cfg.optim),
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        **_checkpointing(cfg.gradient_checkpointing),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # rotation is ours: it must only ever count complete step-N folders
        eval_strategy="steps" if evaluating else "no",
        eval_steps=cfg.eval_steps if evaluating else None,
        report_to=["tensorboard"] if cfg.report_to == "tensorboard" else [],
        use_cpu=device == "cpu",
        remove_unused_columns=False,
        disable_tqdm=not sys.stderr.isatty(),
        dataloader_pin_memory=device != "cpu",
        deepspeed=deepspeed,
        ddp_backend=_backend(cfg, device),
        ddp_timeout=cfg.ddp_timeout,
        # Every method uses all its trainable parameters in each forward: skip DDP's graph walk.
        ddp_find_unused_parameters=False,
    )


def _backend(cfg: Any, device: str) -> str | None:
    from danlu.utils.dist import world_size

    if world_size() == 1 and dist_strategy(cfg) != "deepspeed":  # DeepSpeed needs a group always
        return None
    if cfg.ddp_backend != "auto":
        return cfg.ddp_backend
    return "nccl" if device.startswith("cuda") else "gloo"


def _checkpointing(on: bool) -> dict[str, Any]:
    flag, kwargs = checkpointing_fields()
    # non-reentrant: works with frozen inputs (adapters) and with prefix tuning's cache
    return {flag: on, kwargs: {"use_reentrant": False} if on else None}


def _check_precision(cfg: Any, device: str) -> None:
    if device == "cpu" and cfg.fp16:
        raise UsageError("fp16: float16 mixed precision needs a GPU; on CPU use bf16: true")
    if cfg.bf16 and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_bf16_supported():
            raise UsageError("bf16: this GPU has no bfloat16 support (pre-Ampere); use fp16: true")


def _optimizer(name: str) -> str:
    if name == "adamw_8bit":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UsageError(
                "optim: adamw_8bit needs bitsandbytes: pip install bitsandbytes"
            ) from None
    return OPTIMIZERS[name]
