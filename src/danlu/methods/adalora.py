"""`adalora`: LoRA whose rank budget is re-allocated between matrices during training.

The rank allocator must see every optimiser step: the engine calls `Method.on_step(model,
step)` after `optimizer.step()` and before `zero_grad()` (it reads the gradients).
"""

from __future__ import annotations

from typing import Any

from danlu.config.methods import AdaLoraArgs
from danlu.methods import _peft
from danlu.methods.lora import target_modules
from danlu.methods.registry import MethodContext, register
from danlu.utils.errors import UsageError


def on_step(model: Any, step: int) -> None:
    """Update importance scores and prune ranks; `step` is the 0-based global optimiser step."""
    model.base_model.update_and_allocate(step)


@register("adalora", "adalora", on_step=on_step)
def prepare(model: Any, params: AdaLoraArgs, ctx: MethodContext) -> Any:
    from peft import AdaLoraConfig

    total = params.adalora_total_step or ctx.total_steps
    if not total:
        raise UsageError("method 'adalora' needs the run's step count: set adalora_total_step")
    if params.adalora_tinit + params.adalora_tfinal >= total:
        raise UsageError(
            f"adalora_tinit + adalora_tfinal must be < the {total} training steps "
            f"(no step would be left for rank pruning)"
        )
    lora = ctx.lora
    config = AdaLoraConfig(
        task_type=_peft.task_type(model),
        init_r=params.adalora_init_r,
        target_r=params.adalora_target_r,
        tinit=params.adalora_tinit,
        tfinal=params.adalora_tfinal,
        deltaT=params.adalora_delta_t,
        total_step=total,
        # added to every forward's loss; Trainer sums accumulation x processes of them per step
        orth_reg_weight=params.adalora_orth_reg_weight / ctx.loss_copies,
        lora_alpha=lora.lora_alpha if lora.lora_alpha is not None else 2 * params.adalora_init_r,
        lora_dropout=lora.lora_dropout,
        target_modules=target_modules(lora.lora_target),
        modules_to_save=_peft.extra_modules(lora.additional_target),
    )
    return _peft.wrap(model, config, ctx, "adalora")
