"""Shared material for the template tests: the Qwen2 tokenizer and the real templates in ../shared."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from tests.conftest import shared_path

SHARED_TEMPLATES = (
    "GLM-4.6",
    "HuggingFaceTB-SmolLM3-3B",
    "Qwen-Qwen2.5-7B-Instruct",
    "Qwen-Qwen3-0.6B",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
    "google-gemma-2-2b-it",
    "ibm-granite-granite-3.3-2B-Instruct",
    "meta-llama-Llama-3.1-8B-Instruct",
    "microsoft-Phi-3.5-mini-instruct",
    "mistralai-Mistral-Nemo-Instruct-2407",
)


def qwen2() -> Any:
    """The Qwen2 tokenizer from ../shared (skips when absent), loaded once per session."""
    return _load(str(shared_path("tokenizers", "qwen2")))


@lru_cache(maxsize=1)
def _load(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def qwen2_with(name: str) -> Any:
    """The Qwen2 tokenizer (a fresh shallow copy) carrying the shared template `name`."""
    import copy

    tok = copy.copy(qwen2())
    tok.chat_template = shared_path("chat_templates", f"{name}.jinja").read_text(encoding="utf-8")
    return tok
