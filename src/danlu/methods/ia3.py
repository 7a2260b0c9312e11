"""`ia3`: (IA)^3, learned rescaling vectors on attention keys/values and feed-forward inputs."""

from __future__ import annotations

from typing import Any

from danlu.config.methods import IA3Args
from danlu.methods import _peft
from danlu.methods.registry import MethodContext, register


@register("ia3", "ia3")
def prepare(model: Any, params: IA3Args, ctx: MethodContext) -> Any:
    from peft import IA3Config

    targets = list(params.ia3_target) or None
    config = IA3Config(
        task_type=_peft.task_type(model),
        target_modules=targets,
        # With explicit targets, peft's per-architecture feed-forward default may name modules
        # that are not targeted, so pass the user's (possibly empty) list instead.
        feedforward_modules=list(params.ia3_feedforward) if targets else None,
        modules_to_save=_peft.extra_modules(ctx.lora.additional_target),
    )
    return _peft.wrap(model, config, ctx, "ia3")
