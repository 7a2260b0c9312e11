"""Fine-tuning methods (DESIGN §4): one module per method, all reachable through the registry."""

from danlu.methods import adalora, freeze, full, ia3, lora, prefix, prompt, ptuning, qlora, registry  # noqa: F401  (registration)
from danlu.methods.merge import merge_lora
from danlu.methods.registry import (
    METHODS,
    Method,
    MethodContext,
    get_method,
    prepare,
    register,
    trainable_names,
    trainable_summary,
)

__all__ = [
    "METHODS",
    "Method",
    "MethodContext",
    "get_method",
    "merge_lora",
    "prepare",
    "register",
    "registry",
    "trainable_names",
    "trainable_summary",
]
