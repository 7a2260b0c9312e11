"""Model loading: local HF folders, .gguf files, hub ids, and embedded names (DESIGN §4)."""

from danlu.models.device import pick_device, pick_dtype
from danlu.models.embedded import EMBEDDED, embedded_gguf
from danlu.models.load import load_model, load_tokenizer
from danlu.models.resolve import resolve_model

__all__ = [
    "EMBEDDED",
    "embedded_gguf",
    "load_model",
    "load_tokenizer",
    "pick_device",
    "pick_dtype",
    "resolve_model",
]
