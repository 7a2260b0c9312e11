"""Shared plumbing of the PEFT-based methods: wrap a model, or continue an existing adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from danlu.methods.registry import MethodContext
from danlu.utils.errors import UsageError


def wrap(model: Any, config: Any, ctx: MethodContext, method: str) -> Any:
    """`get_peft_model(model, config)`, or the adapter of `ctx.adapter` made trainable.

    When continuing, the adapter's own config wins (its rank and targets are baked into its
    weights); the method must be of the same PEFT type or we refuse rather than train another.
    """
    from peft import PeftModel, get_peft_model

    if isinstance(model, PeftModel):  # load_model already attached ModelArgs.adapter
        _check_same_type(model.peft_config["default"], config, ctx.adapter, method)
        _require_trainable(model, ctx.adapter)
        return model
    if ctx.adapter:
        return _continue(model, config, ctx.adapter, method)
    try:
        return get_peft_model(model, config)
    except (ValueError, TypeError) as exc:
        key = _TARGET_KEY.get(method) if "Target modules" in str(exc) else None
        where = f"{key}: " if key else ""
        raise UsageError(f"{where}method '{method}': {_first_line(exc)}") from None


# The config key that sets a method's `target_modules` (peft names the modules it did not find).
_TARGET_KEY = {"lora": "lora_target", "qlora": "lora_target", "adalora": "lora_target",
               "ia3": "ia3_target"}  # fmt: skip


def _continue(model: Any, config: Any, adapter: str, method: str) -> Any:
    from peft import PeftConfig, PeftModel

    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise UsageError(f"adapter '{adapter}': no adapter_config.json (not a PEFT adapter)")
    _check_same_type(PeftConfig.from_pretrained(path), config, adapter, method)
    return PeftModel.from_pretrained(model, path, is_trainable=True)


def _check_same_type(existing: Any, wanted: Any, adapter: str | None, method: str) -> None:
    if existing.peft_type != wanted.peft_type:
        raise UsageError(
            f"adapter '{adapter}' is {existing.peft_type.value}, but method '{method}' trains "
            f"{wanted.peft_type.value}; pick the matching method or drop `adapter`"
        )


def _require_trainable(model: Any, adapter: str | None) -> None:
    if model.peft_config["default"].inference_mode:
        raise UsageError(
            f"adapter '{adapter}' was loaded for inference; load it with "
            f"load_model(..., for_training=True) to continue training it"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def task_type(model: Any) -> Any:
    """SEQ_CLS for a reward model (peft then also trains and saves its new `score` head),
    CAUSAL_LM otherwise."""
    from peft import TaskType

    name = type(model).__name__
    return TaskType.SEQ_CLS if name.endswith("ForSequenceClassification") else TaskType.CAUSAL_LM


def hidden_size(model: Any) -> int:
    config = (
        model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    )
    return int(getattr(config, "hidden_size", None) or config.d_model)


def extra_modules(names: list[str]) -> list[str] | None:
    """`additional_target` as peft's `modules_to_save` (None when empty)."""
    return list(names) or None
