"""Config sections of the fine-tuning methods: which method, and each method's parameters.

Each `danlu.methods.<name>` module takes its typed section from here; keys stay flat and unique.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from danlu.config import sections as _core  # noqa: F401  (core sections come first in dumps)
from danlu.config.schema import section

METHODS = Literal[
    "full", "freeze", "lora", "qlora", "ptuning_v2", "prefix", "prompt", "ptuning", "ia3", "adalora"
]


@section("method")
class MethodArgs:
    method: METHODS = "lora"
    """Fine-tuning method: full | freeze | lora | qlora | ptuning_v2 | prefix | prompt | ptuning |
    ia3 | adalora."""


@section("lora")
class LoraArgs:
    lora_rank: int = 8
    """LoRA rank r."""
    lora_alpha: float | None = None
    """LoRA scaling alpha; default 2 x lora_rank."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch."""
    lora_target: list[str] = field(default_factory=lambda: ["all-linear"])
    """Modules to adapt: `all-linear` or names such as q_proj,v_proj (query_key_value for ChatGLM)."""
    use_rslora: bool = False
    """Rank-stabilised LoRA scaling (alpha / sqrt(r))."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""


@section("freeze")
class FreezeArgs:
    freeze_trainable_layers: int = 2
    """`freeze`: train the last N decoder blocks (negative: the first N)."""
    freeze_trainable_modules: list[str] = field(default_factory=list)
    """`freeze`: also train parameters whose names contain any of these strings."""


@section("prompt_learning")
class PromptLearningArgs:
    pre_seq_len: int = 128
    """Virtual tokens for prefix / ptuning_v2 / prompt / ptuning."""
    prefix_projection: bool = False
    """`prefix`/`ptuning_v2`: reparameterise the prefix with an MLP (as in ChatGLM's P-Tuning v2)."""
