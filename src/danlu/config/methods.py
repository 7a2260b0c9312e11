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
    """Modules to adapt: `all-linear` or names such as q_proj,v_proj (query_key_value for ChatGLM).
    Also used by `qlora` and `adalora`."""
    use_rslora: bool = False
    """Rank-stabilised LoRA scaling (alpha / sqrt(r))."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""
    additional_target: list[str] = field(default_factory=list)
    """`lora`/`qlora`/`adalora`/`ia3`: modules trained in full and saved with the adapter, e.g.
    embed_tokens,lm_head after adding tokens."""


@section("adalora")
class AdaLoraArgs:
    adalora_init_r: int = 12
    """`adalora`: initial rank of every adapted matrix (budget is then pruned to target_r)."""
    adalora_target_r: int = 8
    """`adalora`: average rank the budget is pruned to."""
    adalora_tinit: int = 0
    """`adalora`: warmup steps before rank pruning starts."""
    adalora_tfinal: int = 0
    """`adalora`: final steps trained at the pruned ranks without further pruning."""
    adalora_delta_t: int = 1
    """`adalora`: steps between two rank re-allocations."""
    adalora_total_step: int | None = None
    """`adalora`: total optimiser steps of the schedule; default: the run's own step count."""
    adalora_orth_reg_weight: float = 0.5
    """`adalora`: weight of the orthogonality regulariser added to the loss."""


@section("ia3")
class IA3Args:
    ia3_target: list[str] = field(default_factory=list)
    """`ia3`: modules to rescale (e.g. k_proj,v_proj,down_proj); empty = peft's default for the
    architecture."""
    ia3_feedforward: list[str] = field(default_factory=list)
    """`ia3`: which of ia3_target are feed-forward layers (their input is rescaled, not output)."""


@section("freeze")
class FreezeArgs:
    freeze_trainable_layers: int = 2
    """`freeze`: train the last N decoder blocks (negative: the first N; 0: none)."""
    freeze_trainable_modules: list[str] = field(default_factory=list)
    """`freeze`: also train parameters whose names contain any of these strings."""


@section("prompt_learning")
class PromptLearningArgs:
    pre_seq_len: int = 128
    """Virtual tokens for prefix / ptuning_v2 / prompt / ptuning."""
    prefix_projection: bool = False
    """`prefix`/`ptuning_v2`: reparameterise the prefix with an MLP (as in ChatGLM's P-Tuning v2)."""
    prompt_encoder_hidden_size: int | None = None
    """`prefix` projection MLP / `ptuning` encoder width; default: the model's hidden size."""
    prompt_encoder_type: Literal["mlp", "lstm"] = "mlp"
    """`ptuning`: the P-Tuning v1 prompt encoder: an MLP or a bidirectional LSTM + MLP."""
    prompt_init_text: str | None = None
    """`prompt`: initialise the virtual tokens from this text's embeddings (else random)."""
