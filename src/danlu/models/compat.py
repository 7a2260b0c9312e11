"""Names that changed between the transformers releases our range allows, read from the
installed API (signatures, dataclass fields), never from a version number: a release that
renames something again then fails a test instead of a user's run.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any


def cache_keyword(model: Any) -> str:
    """The forward keyword that takes the KV cache: `cache` (transformers >= 5.24; the old name
    warns on every call) or `past_key_values` (earlier releases). A PeftModel forwards its
    keywords to the model it wraps, so that model's signature decides."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@functools.cache
def checkpointing_fields() -> tuple[str, str]:
    """TrainingArguments' names for (activation checkpointing on, its kwargs):
    `activation_checkpointing*`, or the older `gradient_checkpointing*` (now deprecated)."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    stem = "activation" if "activation_checkpointing" in names else "gradient"
    return f"{stem}_checkpointing", f"{stem}_checkpointing_kwargs"
