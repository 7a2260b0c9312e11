"""A danlu run config (DESIGN §2) -> the Setup the estimator takes, and back to config keys."""

from __future__ import annotations

from typing import Any

from danlu.config.stages import REFERENCE_FREE
from danlu.plan.setup import Setup

# deepspeed preset -> (zero stage, optimizer offload, parameter offload)
DEEPSPEED = {
    "zero1": (1, "none", "none"),
    "zero2": (2, "none", "none"),
    "zero2_offload": (2, "cpu", "none"),
    "zero3": (3, "none", "none"),
    "zero3_offload": (3, "cpu", "cpu"),
    "zero3_nvme": (3, "nvme", "nvme"),
}
_OPTIM = {"adamw_torch": "adamw", "adamw_8bit": "adamw_8bit", "sgd": "sgd", "adafactor": "sgd"}


def setup_from_config(cfg: Any) -> tuple[str, dict[str, Any]]:
    """(model spec, Setup fields) of a loaded danlu Config; CLI flags may override the fields."""
    method = cfg.method
    weights = {8: "int8", 4: "int4"}.get(cfg.quantization_bit or 0)
    if weights is None:
        weights = "fp16" if cfg.fp16 else "fp32" if cfg.model_dtype == "float32" else "bf16"
    fields: dict[str, Any] = {
        "method": method,
        "lora_rank": cfg.lora_rank,
        "lora_targets": tuple(cfg.lora_target),
        "pre_seq_len": cfg.pre_seq_len,
        "prefix_projection": cfg.prefix_projection,
        "freeze_layers": cfg.freeze_trainable_layers,
        "weights": weights,
        "optimizer": _OPTIM.get(cfg.optim, "adamw"),
        "micro_batch": cfg.per_device_train_batch_size * _rows_per_sample(cfg),
        "seq_len": cfg.cutoff_len + (cfg.max_completion_length if cfg.stage == "grpo" else 0),
        "grad_ckpt": cfg.gradient_checkpointing,
        "accumulation": cfg.gradient_accumulation_steps,
    }
    fields["reference_copy"] = method in ("full", "freeze") and _has_reference(cfg)
    fields["generates"] = cfg.stage == "grpo"
    fields.update(_sharding(cfg))
    return cfg.model, fields


def _rows_per_sample(cfg: Any) -> int:
    """Rows one sample puts through the forward: a pair's two answers (rm, dpo), a kto answer
    and its mismatched row, a grpo prompt's num_generations answers."""
    return {"rm": 2, "dpo": 2, "kto": 2, "grpo": cfg.num_generations}.get(cfg.stage, 1)


def _has_reference(cfg: Any) -> bool:
    if cfg.stage == "dpo":
        return cfg.pref_loss not in REFERENCE_FREE and not cfg.precompute_ref_log_probs
    return cfg.stage == "kto" or (cfg.stage == "grpo" and cfg.pref_beta > 0)


def _sharding(cfg: Any) -> dict[str, Any]:
    """Data-parallel size and ZeRO stage: DeepSpeed presets, and FSDP as its ZeRO equivalent
    (full_shard ~ ZeRO-3, shard_grad_op keeps weights gathered through a step ~ ZeRO-2)."""
    from danlu.utils.dist import world_size

    out: dict[str, Any] = {}
    dp = max(cfg.nproc_per_node * (cfg.nnodes or 1), world_size())
    if dp > 1:
        out["dp"] = dp
    if cfg.deepspeed in DEEPSPEED:
        zero, opt_off, param_off = DEEPSPEED[cfg.deepspeed]
        out.update(zero=zero, offload_optimizer=opt_off, offload_params=param_off)
    elif cfg.distributed == "fsdp":
        out["zero"] = 2 if cfg.fsdp_sharding == "shard_grad_op" else 3
        if cfg.fsdp_offload:
            out.update(offload_optimizer="cpu", offload_params="cpu")
    return out


def deepspeed_preset(s: Setup) -> str | None:
    """The danlu `deepspeed:` preset for a Setup's ZeRO stage and offload, if any."""
    for name, (zero, opt_off, param_off) in DEEPSPEED.items():
        if (zero, opt_off, param_off) == (s.zero, s.offload_optimizer, s.offload_params):
            return name
    return None if s.zero == 0 else f"zero{s.zero}"


def config_fragment(model: str, s: Setup) -> dict[str, Any]:
    """danlu train keys (flat, DESIGN §2) that reproduce a Setup."""
    out: dict[str, Any] = {"model": model, "method": s.method}
    if s.method in ("lora", "qlora", "adalora"):
        out["lora_rank"] = s.lora_rank
        out["lora_target"] = list(s.lora_targets)
    if s.method in ("prefix", "ptuning_v2", "prompt", "ptuning"):
        out["pre_seq_len"] = s.pre_seq_len
    if s.method == "freeze":
        out["freeze_trainable_layers"] = s.freeze_layers
    if s.base_weights == "int4":
        out["quantization_bit"] = 4
    out.update(
        {
            "cutoff_len": s.seq_len,
            "per_device_train_batch_size": s.micro_batch,
            "gradient_accumulation_steps": s.accumulation,
            "gradient_checkpointing": s.grad_ckpt,
            "bf16": s.compute_dtype == "bf16",
        }
    )
    if s.optimizer == "adamw_8bit":
        out["optim"] = "adamw_8bit"
    preset = deepspeed_preset(s)
    if preset:
        out["deepspeed"] = preset
    return out
