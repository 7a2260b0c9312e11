"""`deepspeed:` -> the DeepSpeed config dict the Trainer gets, agreeing with the danlu config.

A preset name (package data in `deepspeed_presets/`) or a user's JSON file. Every value the danlu
config also decides (micro-batch, accumulation, global batch, clipping, precision) is filled in
where the JSON says `auto`, and where the JSON says something else that disagrees, the run stops
naming both keys: the seeds' runs trained with a batch or precision other than the one their
YAML said, because DeepSpeed silently used the JSON's.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from danlu.config.sections import DEEPSPEED_PRESETS as PRESETS
from danlu.utils.errors import UsageError


def preset_path(name: str) -> Path:
    return Path(str(resources.files("danlu.train") / "deepspeed_presets" / f"{name}.json"))


def read_deepspeed(spec: str) -> tuple[dict, str]:
    """(config, where it came from) for a preset name or a JSON file path."""
    path = preset_path(spec) if spec in PRESETS else Path(spec).expanduser()
    if not path.is_file():
        raise UsageError(
            f"deepspeed: {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"deepspeed: {path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(config, dict):
        raise UsageError(f"deepspeed: {path}: expected a JSON object")
    return config, str(path)


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def deepspeed_config(cfg: Any, world_size: int, run_dir: Path) -> dict:
    """The resolved DeepSpeed config for this run (also written to run_dir/deepspeed.json)."""
    config, where = read_deepspeed(cfg.deepspeed)
    for keys, value in _decided_by_danlu(cfg, world_size).items():
        _fill(config, keys, value, where)
    _check_supported(config, cfg, where)
    _fill_nvme(config, cfg.nvme_path)
    if cfg.deepspeed_flops_profiler:
        config["flops_profiler"] = {
            "enabled": True,
            "profile_step": 2,
            "module_depth": -1,
            "top_modules": 3,
            "detailed": True,
            "output_file": str(run_dir / "flops_profile.txt"),
        }
    return config


def _decided_by_danlu(cfg: Any, world_size: int) -> dict[tuple[str, ...], tuple[str, Any]]:
    """JSON key path -> (danlu key, value)."""
    micro, accum = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    return {
        ("train_micro_batch_size_per_gpu",): ("per_device_train_batch_size", micro),
        ("gradient_accumulation_steps",): ("gradient_accumulation_steps", accum),
        ("train_batch_size",): (
            "per_device_train_batch_size x gradient_accumulation_steps x processes",
            micro * accum * world_size,
        ),
        ("gradient_clipping",): ("max_grad_norm", float(cfg.max_grad_norm)),
        ("bf16", "enabled"): ("bf16", bool(cfg.bf16)),
        ("fp16", "enabled"): ("fp16", bool(cfg.fp16)),
    }


def _fill(config: dict, keys: tuple[str, ...], decided: tuple[str, Any], where: str) -> None:
    danlu_key, value = decided
    node = config
    for key in keys[:-1]:
        if key not in node:
            if keys[-1] == "enabled" and value:  # precision on: the section must exist
                node[key] = {}
            else:
                return
        node = node[key]
    current = node.get(keys[-1], "auto")
    if current == "auto":
        node[keys[-1]] = value
    elif current != value and not (isinstance(value, float) and _close(current, value)):
        raise UsageError(
            f"deepspeed {where}: {'.'.join(keys)} is {current!r} but {danlu_key} is {value!r}; "
            'set it to "auto" (danlu fills it) or make the two agree'
        )


def _close(a: Any, b: float) -> bool:
    return isinstance(a, int | float) and abs(float(a) - b) < 1e-9


def _check_supported(config: dict, cfg: Any, where: str) -> None:
    stage = zero_stage(config)
    if stage == 3 and cfg.quantization_bit is not None:
        raise UsageError(
            f"deepspeed {where}: ZeRO-3 shards every parameter, and a {cfg.quantization_bit}-bit "
            "bitsandbytes base cannot be sharded; use zero2 or zero2_offload with qlora"
        )
    if "optimizer" in config and cfg.optim != "adamw_torch":
        raise UsageError(
            f"deepspeed {where}: its optimizer section builds DeepSpeed's AdamW (CPU-Adam when "
            f"offloading), so optim must be adamw_torch, got {cfg.optim!r}"
        )
    if stage not in (0, 1, 2, 3):
        raise UsageError(f"deepspeed {where}: zero_optimization.stage must be 0-3, got {stage}")


def _fill_nvme(config: dict, nvme_path: str) -> None:
    zero = config.get("zero_optimization", {})
    for key in ("offload_optimizer", "offload_param"):
        if zero.get(key, {}).get("nvme_path") == "auto":
            zero[key]["nvme_path"] = nvme_path
