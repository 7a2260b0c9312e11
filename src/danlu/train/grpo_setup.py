"""What stage grpo needs beside its loss: the tokens that end an answer, and `rm:PATH` reward
models as reward functions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError


def stop_ids(cfg: Any, tokenizer: Any, generation_config: Any = None) -> frozenset[int]:
    """What ends a sampled answer: as in danlu's chat and server (data.templates.stop_ids)."""
    from danlu.data import templates

    template = templates.get_template(cfg.template, tokenizer)
    return templates.stop_ids(tokenizer, template, generation_config)


def reward_model_args(cfg: Any, path: str) -> Any:
    """ModelArgs of an `rm:PATH` reward model: a stage-rm adapter over `model:` (its base) or
    a whole model folder, unquantised, on the policy's device."""
    from danlu.models.check import is_adapter_dir

    model_args = cfg.section("model")
    folder = Path(path).expanduser()
    if is_adapter_dir(folder):
        return dataclasses.replace(model_args, adapter=str(folder), quantization_bit=None)
    return dataclasses.replace(model_args, model=str(folder), adapter=None, quantization_bit=None)


def reward_model_scorer(cfg: Any, path: str, tokenizer: Any) -> Any:
    """f(prompts, completions, prompt_ids, completion_ids, ...) -> the reward model's scores of
    each prompt + answer (token ids shared with the policy)."""
    import torch

    from danlu.data.collate import Collator
    from danlu.models.load import load_model

    loaded = load_model(reward_model_args(cfg, path), head="score")
    if loaded.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise UsageError(
            f"reward_funcs: rm:{path}: its tokenizer is not the policy's; a grpo reward model "
            "must share the policy's vocabulary (train it with stage: rm from the same base)"
        )
    model = loaded.model.eval().requires_grad_(False)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id

    def score(prompts: list, completions: list, prompt_ids: list, completion_ids: list, **_: Any):
        rows = [p + c for p, c in zip(prompt_ids, completion_ids, strict=True)]
        batch = Collator(pad)([{"input_ids": r, "labels": r} for r in rows])
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"].to(device),
                        attention_mask=batch["attention_mask"].to(device))  # fmt: skip
        return out.logits.squeeze(-1).float().tolist()

    return score
