"""`ptuning`: P-Tuning v1 (virtual tokens produced by a small MLP or LSTM prompt encoder)."""

from __future__ import annotations

from typing import Any

from danlu.config.methods import PromptLearningArgs
from danlu.methods import _peft
from danlu.methods.registry import MethodContext, register


@register("ptuning", "prompt_learning")
def prepare(model: Any, params: PromptLearningArgs, ctx: MethodContext) -> Any:
    from peft import PromptEncoderConfig, PromptEncoderReparameterizationType

    kind = {
        "mlp": PromptEncoderReparameterizationType.MLP,
        "lstm": PromptEncoderReparameterizationType.LSTM,
    }[params.prompt_encoder_type]
    config = PromptEncoderConfig(
        task_type=_peft.task_type(model),
        num_virtual_tokens=params.pre_seq_len,
        encoder_reparameterization_type=kind,
        encoder_hidden_size=params.prompt_encoder_hidden_size or _peft.hidden_size(model),
    )
    return _peft.wrap(model, config, ctx, "ptuning")
