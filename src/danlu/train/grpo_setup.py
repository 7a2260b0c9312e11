"""What stage grpo needs beside its loss: the tokens that end an answer, and `rm:PATH` reward
models as reward functions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError


def stop_ids(cfg: Any, tokenizer: Any) -> frozenset[int]:
    """The tokenizer's EOS and the chat template's end-of-turn token (<|im_end|>, <|eot_id|>):
    an answer ends at either, as in danlu's chat and server."""
    from danlu.data.templates import get_template

    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    closer = get_template(cfg.template, tokenizer).closer(tokenizer)
    closing = tokenizer.encode(closer.strip(), add_special_tokens=False) if closer.strip() else []
    if len(closing) == 1:
        ids.add(int(closing[0]))
    return frozenset(ids)


def reward_model_args(cfg: Any, path: str) -> Any:
    """ModelArgs of an `rm:PATH` reward model: a stage-rm adapter over `model:` (its base) or
    a whole model folder, unquantised, on the policy's device."""
    model_args = cfg.section("model")
    folder = Path(path).expanduser()
    if (folder / "adapter_config.json").is_file():
        return dataclasses.replace(model_args, adapter=str(folder), quantization_bit=None)
    return dataclasses.replace(model_args, model=str(folder), adapter=None, quantization_bit=None)


def reward_model_scorer(cfg: Any, path: str, tokenizer: Any) -> Any:
    """f(prompts, completions, prompt_ids, completion_ids, ...) -> the reward model's scores of
    each prompt + answer (token ids shared with the policy)."""
    import torch

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
        longest = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (longest - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows], device=device)
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float().tolist()

    return score
