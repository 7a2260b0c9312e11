"""The generation task: batched decoding of each prompt, then BLEU-4 / ROUGE against references.

Decoding is greedy unless `eval_do_sample`; it uses a fresh GenerationConfig so a model's own
defaults (some ship `do_sample: true`, a repetition penalty, a top_p) cannot make scores
non-deterministic. Prompts are left-padded (so every row's next token is at the last position)
and batched by length to cut padding; generation stops at EOS or at the chat template's
end-of-turn token. `score_sample` is the per-sample metric (see `danlu.eval.metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from danlu.eval.forward import length_batches, model_device, progress
from danlu.eval.metrics import METRICS, average, score_sample

__all__ = [
    "METRICS",
    "GenerationSettings",
    "average",
    "generate",
    "score_predictions",
    "score_sample",
]


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 42
    batch_size: int = 8


def stop_ids(tokenizer: Any, template: Any = None) -> list[int]:
    """EOS plus the template's end-of-turn token (e.g. <|im_end|>, <|eot_id|>) when it is one token."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    closer = template.closer(tokenizer) if template is not None else ""
    if closer:
        enc = tokenizer(closer, add_special_tokens=False)["input_ids"]
        if len(enc) == 1 and enc[0] not in ids:
            ids.append(enc[0])
    return ids


def generate(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], settings: GenerationSettings,
    stop: Sequence[int] = (), quiet: bool = True,
) -> list[str]:  # fmt: skip
    """The decoded continuation of each prompt (special tokens removed, stripped), in order."""
    import torch

    if settings.do_sample:
        torch.manual_seed(settings.seed)
    config = _generation_config(tokenizer, settings, stop)
    outputs: list[str] = [""] * len(prompts)
    batches = length_batches([len(p) for p in prompts], settings.batch_size)
    for batch in progress(batches, len(batches), "generation", quiet):
        texts = _generate_batch(model, tokenizer, [prompts[i] for i in batch], config)
        for i, text in zip(batch, texts, strict=True):
            outputs[i] = text
    return outputs


def _generation_config(tokenizer: Any, settings: GenerationSettings, stop: Sequence[int]) -> Any:
    from transformers import GenerationConfig

    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": settings.do_sample,
        "eos_token_id": list(stop) or tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    return GenerationConfig(**kwargs)


def _generate_batch(
    model: Any, tokenizer: Any, prompts: list[Sequence[int]], config: Any
) -> list[str]:
    import torch

    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding: the next token is at the last position
        ids[i, length - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, length - len(p) :] = 1
    device = model_device(model)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
        )
    new = out[:, length:].cpu()
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def score_predictions(
    predictions: Sequence[str], references: Sequence[str], style: str = "standard"
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per-sample scores and their means (the corpus scores), in percent."""
    per = [score_sample(p, r, style) for p, r in zip(predictions, references, strict=True)]
    return per, average(per)
