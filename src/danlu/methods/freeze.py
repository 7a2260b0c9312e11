"""`freeze`: train only the last (or first) N decoder blocks and/or named modules."""

from __future__ import annotations

from typing import Any

from danlu.config.methods import FreezeArgs
from danlu.methods.registry import MethodContext, register
from danlu.utils.errors import UsageError


@register("freeze", "freeze", is_adapter=False)
def prepare(model: Any, params: FreezeArgs, ctx: MethodContext) -> Any:
    if ctx.adapter:
        raise UsageError(
            "method 'freeze' trains base weights, but `adapter` is set; merge it first"
        )
    prefixes = _chosen_blocks(model, params.freeze_trainable_layers)
    wanted = params.freeze_trainable_modules
    for name, p in model.named_parameters():
        in_block = any(name.startswith(pre) for pre in prefixes)
        p.requires_grad_(in_block or any(w in name for w in wanted))
    unmatched = [w for w in wanted if not any(w in n for n, _ in model.named_parameters())]
    if unmatched:
        raise UsageError(f"freeze_trainable_modules: no parameter name contains '{unmatched[0]}'")
    return model


def _chosen_blocks(model: Any, n: int) -> list[str]:
    """Name prefixes ('model.layers.7.') of the blocks to train: the last n, or first -n."""
    if n == 0:
        return []
    path, blocks = decoder_blocks(model)
    if abs(n) > len(blocks):
        raise UsageError(
            f"freeze_trainable_layers: {n} but the model has only {len(blocks)} decoder blocks"
        )
    picked = range(len(blocks) - n, len(blocks)) if n > 0 else range(-n)
    return [f"{path}.{i}." for i in picked]


def decoder_blocks(model: Any) -> tuple[str, Any]:
    """(dotted path, ModuleList) of the decoder blocks, found by shape not by name.

    Works for `model.layers` (LLaMA/Qwen), `transformer.encoder.layers` (ChatGLM) and
    `transformer.h` (GPT-2 style): the longest ModuleList of identical modules, preferring one
    whose length equals the config's layer count.
    """
    import torch

    expected = _layer_count(model)
    best: tuple[str, Any] | None = None
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        if len({type(m) for m in mod}) != 1:
            continue
        if len(mod) == expected:
            return name, mod
        if best is None or len(mod) > len(best[1]):
            best = (name, mod)
    if best is None:
        raise UsageError("freeze: cannot find the decoder blocks of this model")
    return best


def _layer_count(model: Any) -> int | None:
    config = getattr(model, "config", None)
    for key in ("num_hidden_layers", "num_layers", "n_layer"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None
