"""`lora`: low-rank adapters (optionally rsLoRA scaling or DoRA) via peft."""

from __future__ import annotations

from typing import Any

from danlu.config.methods import LoraArgs
from danlu.methods import _peft
from danlu.methods.registry import MethodContext, register


def lora_config(params: LoraArgs, model: Any) -> Any:
    """peft LoraConfig of the `lora` section for `model` (qlora reuses it)."""
    from peft import LoraConfig

    return LoraConfig(
        task_type=_peft.task_type(model),
        r=params.lora_rank,
        lora_alpha=params.lora_alpha if params.lora_alpha is not None else 2 * params.lora_rank,
        lora_dropout=params.lora_dropout,
        target_modules=target_modules(params.lora_target),
        use_rslora=params.use_rslora,
        use_dora=params.use_dora,
        modules_to_save=_peft.extra_modules(params.additional_target),
    )


def target_modules(names: list[str]) -> str | list[str]:
    # peft wants the bare string for its "every Linear except the output head" mode.
    return "all-linear" if names == ["all-linear"] else list(names)


@register("lora", "lora")
def prepare(model: Any, params: LoraArgs, ctx: MethodContext) -> Any:
    return _peft.wrap(model, lora_config(params, model), ctx, "lora")
