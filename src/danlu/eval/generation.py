"""The generation task: batched decoding of each prompt, then BLEU-4 / ROUGE against references.

Decoding is greedy unless `eval_do_sample`, with danlu's own sampling parameters, so a model's
generation_config defaults (some ship `do_sample: true`, a repetition penalty, a top_p) cannot
make scores non-deterministic. Prompts are batched by length to cut padding; generation stops
at EOS or at the chat template's end-of-turn token. `score_sample` is the per-sample metric (see `danlu.eval.metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from danlu.eval.forward import length_batches, progress
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


def generate(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], settings: GenerationSettings,
    stop: Sequence[int] = (), quiet: bool = True,
) -> list[str]:  # fmt: skip
    """The decoded continuation of each prompt (special tokens removed, stripped), in order.

    Through the inference Engine, so evaluation decodes exactly as `danlu serve` answers:
    one code path for every adapter type (peft's own `generate` drops a prefix adapter's
    key/values on transformers >= 5.24), continuous batching, and a per-prompt seed when
    sampling, so a sample's text does not depend on what it was batched with.
    """
    from danlu.infer.engine import Engine, EngineConfig

    engine = Engine(
        model, tokenizer, config=EngineConfig(max_batch_size=settings.batch_size, batch_wait_ms=0)
    )
    outputs: list[str] = [""] * len(prompts)
    batches = length_batches([len(p) for p in prompts], settings.batch_size)
    try:
        for batch in progress(batches, len(batches), "generation", quiet):
            texts = _generate_batch(engine, [prompts[i] for i in batch], batch, settings, stop)
            for i, text in zip(batch, texts, strict=True):
                outputs[i] = text
    finally:
        engine.close()
    return outputs


def _params(settings: GenerationSettings, stop: Sequence[int], seed: int) -> Any:
    from danlu.infer.params import GenParams

    sampling = settings.do_sample
    return GenParams(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature if sampling else 0.0,
        top_p=settings.top_p if sampling else 1.0,
        seed=seed if sampling else None,
        stop_token_ids=tuple(stop),
    )


def _generate_batch(
    engine: Any, prompts: list[Sequence[int]], index: list[int], settings: GenerationSettings,
    stop: Sequence[int],
) -> list[str]:  # fmt: skip
    """One request per prompt (each with its own seed), submitted together so the engine
    decodes them as one batch; the texts in prompt order."""
    import queue

    events: list[queue.Queue] = [queue.Queue() for _ in prompts]
    requests = [
        engine.submit([list(p)], _params(settings, stop, settings.seed + i), q.put)
        for p, i, q in zip(prompts, index, events, strict=True)
    ]
    texts = []
    try:
        for q in events:
            texts.append(_collect(q).strip())
    finally:
        for request in requests:
            request.cancel()
    return texts


def _collect(events: Any) -> str:
    text = ""
    while True:
        out = events.get()
        if out.finish_reason == "error":
            raise RuntimeError(f"generation failed: {out.error}")
        text += out.text
        if out.finish_reason is not None:
            return text


def score_predictions(
    predictions: Sequence[str], references: Sequence[str], style: str = "standard"
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per-sample scores and their means (the corpus scores), in percent."""
    per = [score_sample(p, r, style) for p, r in zip(predictions, references, strict=True)]
    return per, average(per)
