"""`prompt`: prompt tuning (trained virtual-token embeddings before the input)."""

from __future__ import annotations

from typing import Any

from danlu.config.methods import PromptLearningArgs
from danlu.methods import _peft
from danlu.methods.registry import MethodContext, register


@register("prompt", "prompt_learning")
def prepare(model: Any, params: PromptLearningArgs, ctx: MethodContext) -> Any:
    from peft import PromptTuningConfig, PromptTuningInit

    text = params.prompt_init_text
    config = PromptTuningConfig(
        task_type=_peft.task_type(model),
        num_virtual_tokens=params.pre_seq_len,
        prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
        prompt_tuning_init_text=text,
        # peft tokenises the init text with the model's own tokenizer, from its local folder.
        tokenizer_name_or_path=model.config._name_or_path if text else None,
    )
    return _peft.wrap(model, config, ctx, "prompt")
