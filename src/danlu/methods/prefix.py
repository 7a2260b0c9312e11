"""`prefix` / `ptuning_v2`: deep prefix tuning (trained key/value prefixes in every layer).

peft refuses prefix tuning with gradient checkpointing, and transformers drops
`past_key_values` inside checkpointed layers, which is where "The size of tensor a (256) must
match the size of tensor b (272)" came from: the mask counts the prefix, the keys lost it. We
make the combination work instead: in training, the prefix goes in a cache that never grows
(recomputing a layer then sees exactly what the first pass saw), and checkpointed layers are
told they may keep it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

from danlu.config.methods import PromptLearningArgs
from danlu.methods import _peft
from danlu.methods.registry import MethodContext, register
from danlu.utils.errors import UsageError


@register("ptuning_v2", "prompt_learning")
@register("prefix", "prompt_learning")
def prepare(model: Any, params: PromptLearningArgs, ctx: MethodContext) -> Any:
    from peft import PrefixTuningConfig

    config = PrefixTuningConfig(
        task_type=_peft.task_type(model),
        num_virtual_tokens=params.pre_seq_len,
        prefix_projection=params.prefix_projection,
        encoder_hidden_size=params.prompt_encoder_hidden_size or _peft.hidden_size(model),
    )
    with _checkpointing_paused(model):
        model = _peft.wrap(model, config, ctx, "prefix")
    allow_checkpointing_with_prefix(model)
    return model


@contextlib.contextmanager
def _checkpointing_paused(model: Any) -> Iterator[None]:
    # peft's up-front refusal looks at the `gradient_checkpointing` flags; the fix below makes
    # the combination safe, so hide them while peft builds the prefix encoder.
    flagged = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
    for m in flagged:
        m.gradient_checkpointing = False
    try:
        yield
    finally:
        for m in flagged:
            m.gradient_checkpointing = True


def allow_checkpointing_with_prefix(peft_model: Any) -> None:
    """Make a prefix-tuned PeftModel train correctly with or without gradient checkpointing."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [
        m
        for m in peft_model.get_base_model().modules()
        if isinstance(m, GradientCheckpointingLayer)
    ]
    for layer in layers:
        # Instance attribute: only this model's layers keep the cache when checkpointed.
        layer._can_checkpoint_with_cache = True
    original = peft_model.get_prompt

    @functools.wraps(original)
    def get_prompt(*args: Any, **kwargs: Any) -> Any:
        if not peft_model.training:
            return original(*args, **kwargs)
        _refuse_reentrant(layers)
        return _frozen(original(*args, **kwargs))

    peft_model.get_prompt = get_prompt


def _refuse_reentrant(layers: list[Any]) -> None:
    # Reentrant checkpointing back-propagates each layer separately into the one shared prefix
    # graph, which autograd has freed after the first layer; only the non-reentrant kind works.
    for layer in layers:
        func = getattr(layer, "_gradient_checkpointing_func", None)
        if layer.gradient_checkpointing and getattr(func, "keywords", {}).get("use_reentrant"):
            raise UsageError(
                "prefix tuning with gradient checkpointing needs use_reentrant=False "
                "(the transformers default); reentrant checkpointing cannot train the prefix"
            )


def _frozen(cache: Any) -> Any:
    from transformers import DynamicCache

    if type(cache) is not DynamicCache:
        return cache  # legacy tuples (remote-code models) are never mutated in place
    cache.__class__ = _frozen_cache_class()
    return cache


@functools.cache
def _frozen_cache_class() -> type:
    from transformers import DynamicCache

    class FrozenPrefixCache(DynamicCache):
        """A DynamicCache whose `update` returns prefix + new states without keeping them.

        It forwards whatever the attention layer passes (the arguments after `layer_idx` have
        changed shape between transformers releases: `cache_kwargs`, then `kwargs=`) to the
        real update, then puts the layer back as it was: the concatenation, dtype rules and
        bookkeeping stay transformers' own, and only the storing is undone.
        """

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):  # type: ignore[override]
            layer = self.layers[layer_idx]
            kept = dict(vars(layer))
            # Under autocast the states arrive in bf16 while the prefix is fp32.
            layer.keys = layer.keys.to(key_states.dtype)
            layer.values = layer.values.to(value_states.dtype)
            try:
                return super().update(key_states, value_states, layer_idx, *args, **kwargs)
            finally:
                vars(layer).clear()
                vars(layer).update(kept)

    return FrozenPrefixCache
