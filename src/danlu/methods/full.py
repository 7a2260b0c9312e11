"""`full`: train every weight of the model."""

from __future__ import annotations

from typing import Any

from danlu.methods.registry import MethodContext, register
from danlu.utils.errors import UsageError


@register("full", None, is_adapter=False)
def prepare(model: Any, params: None, ctx: MethodContext) -> Any:
    if ctx.adapter:
        raise UsageError(
            "method 'full' trains the base weights, but `adapter` is set; "
            "merge the adapter first (danlu merge) and train the merged model"
        )
    for p in model.parameters():
        p.requires_grad_(True)
    return model
