"""The method registry: `method:` name -> how to prepare a loaded model for training.

A method module registers its `prepare(model, params, ctx) -> model` with `@register(name,
params_section)`; `params` is that config section (a dataclass from `danlu.config.methods`).
The engine calls `prepare(model, cfg)` once, then `Method.on_step` after every optimiser step,
and `trainable_names(model)` to build its optimiser and to check that nothing else trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from danlu.config.methods import LoraArgs
from danlu.utils.errors import UsageError

_TRAINABLE_ATTR = "danlu_trainable"


@dataclass(frozen=True)
class MethodContext:
    """What a method needs beyond its own section: run-wide facts the engine knows."""

    adapter: str | None = None
    """A PEFT adapter folder to continue training (ModelArgs.adapter)."""
    gradient_checkpointing: bool = False
    total_steps: int | None = None
    """Optimiser steps of the whole run (AdaLoRA's schedule needs it)."""
    lora: LoraArgs = field(default_factory=LoraArgs)
    """LoRA keys shared by lora/qlora/adalora (target, alpha, dropout, extra modules)."""
    loss_copies: int = 1
    """How many times a term the model adds to each forward's loss reaches one optimiser step's
    gradient: Trainer normalises the token loss over the whole step (accumulation x processes)
    and so sums, not averages, the micro-batch losses. A regulariser added per forward (AdaLoRA's)
    must be divided by this to keep its configured weight."""


Prepare = Callable[[Any, Any, MethodContext], Any]
StepHook = Callable[[Any, int], None]


@dataclass(frozen=True)
class Method:
    name: str
    params_section: str | None
    """Config section passed as `params` (None: the method has no parameters)."""
    prepare: Prepare
    on_step: StepHook | None = None
    """Call as `on_step(model, global_step)` after optimizer.step(), before zero_grad()."""
    is_adapter: bool = True
    """True: save with `model.save_pretrained` in PEFT format; False: a full HF model."""


METHODS: dict[str, Method] = {}


def register(
    name: str,
    params_section: str | None,
    *,
    on_step: StepHook | None = None,
    is_adapter: bool = True,
) -> Callable[[Prepare], Prepare]:
    """Decorator: register `prepare` as method `name`; returns it unchanged (stackable)."""

    def deco(fn: Prepare) -> Prepare:
        if name in METHODS:
            raise TypeError(f"method {name!r} registered twice")
        METHODS[name] = Method(name, params_section, fn, on_step, is_adapter)
        return fn

    return deco


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UsageError(
            f"method '{name}' is unknown; known: {', '.join(sorted(METHODS))}"
        ) from None


def prepare(model: Any, cfg: Any, total_steps: int | None = None, loss_copies: int = 1) -> Any:
    """Apply `cfg.method` to a model from `danlu.models.load_model(..., for_training=True)`.

    Returns the model to train (a PeftModel for adapter methods) with exactly the intended
    parameters requiring grad; that set is recorded for `trainable_names`.
    """
    method = get_method(cfg.method)
    ctx = MethodContext(
        adapter=cfg.adapter,
        gradient_checkpointing=cfg.gradient_checkpointing,
        total_steps=total_steps,
        lora=cfg.section("lora"),
        loss_copies=loss_copies,
    )
    params = cfg.section(method.params_section) if method.params_section else None
    return apply(method, model, params, ctx)


def apply(method: Method, model: Any, params: Any, ctx: MethodContext) -> Any:
    """`prepare` with explicit params and context (tests, and callers without a Config)."""
    if method.name != "qlora" and is_quantized(model):
        raise UsageError(
            f"method '{method.name}' cannot train a quantised model; use method: qlora "
            f"or unset quantization_bit"
        )
    model = method.prepare(model, params, ctx)
    _train_new_head(model)
    names = frozenset(n for n, p in model.named_parameters() if p.requires_grad)
    if not names:
        raise UsageError(f"method '{method.name}' left no parameter to train; check its settings")
    object.__setattr__(model, _TRAINABLE_ATTR, names)
    return model


def _train_new_head(model: Any) -> None:
    """A reward model's `score` head is new (random): it trains under every method. (PEFT
    methods already do so: their SEQ_CLS task saves the head with the adapter.)"""
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    for p in head.parameters() if head is not None else ():
        p.requires_grad_(True)


def trainable_names(model: Any) -> frozenset[str]:
    """Names (as in `model.named_parameters()`) of the parameters the method means to train."""
    recorded = getattr(model, _TRAINABLE_ATTR, None)
    if recorded is not None:
        return recorded
    return frozenset(n for n, p in model.named_parameters() if p.requires_grad)


def trainable_summary(model: Any) -> tuple[int, int, float]:
    """(trainable, total, percent) parameter counts; 4-bit weights count as their logical size."""
    trainable = total = 0
    for _, p in model.named_parameters():
        n = logical_numel(p)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total, 100.0 * trainable / max(total, 1)


def logical_numel(p: Any) -> int:
    """Elements a parameter stands for: ZeRO-3 leaves an empty placeholder (real count in
    ds_numel), bitsandbytes packs two 4-bit values per byte (real shape in quant_state)."""
    if hasattr(p, "ds_numel"):
        return int(p.ds_numel)
    state = getattr(p, "quant_state", None)
    shape = getattr(state, "shape", None)
    if shape is not None:
        return math.prod(shape)
    return p.numel()


def is_quantized(model: Any) -> bool:
    """True when the (base) model holds quantised weights (bitsandbytes and the like)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "hf_quantizer", None) is not None or any(
        getattr(base, f"is_loaded_in_{b}bit", False) for b in (4, 8)
    )
