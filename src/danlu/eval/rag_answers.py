"""The retrieval task's answer half: questions that carry a reference `answer` are answered by
each model from the passages the index retrieves, then scored against the reference.

The prompt is exactly what `danlu rag ask` and `danlu serve --rag-index` give the model (the
knowledge-base template over the numbered passages, through the chat template), so the score
is the grounded system's, not the bare model's. A question whose best passage is under
`score_threshold` gets the refusal without calling the model, and is scored as such: a
refusal where the documents hold the answer counts against the system.

Scores per question: BLEU-4 and ROUGE-1/2/L as the generation task computes them (jieba words
for Chinese), `exact_match` (the normalised answer equals the normalised reference) and
`contains` (the normalised reference appears in the normalised answer: the fair measure for a
short fact inside a sentence, e.g. "80 °C" in "Brew it at 80 °C [1]."). Normalising folds
case and width (NFKC), drops citation marks like [1], whitespace and punctuation.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

TASK = "retrieval_answers"
_CITATION = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class Answerable:
    """A question with a reference answer and the grounded prompt built for it."""

    question: Any
    """danlu.rag.evaluate.Question (its `answer` is set)."""
    grounded: Any
    """danlu.rag.ask.Grounded: the prompt, or the refusal."""


def ground_questions(cfg: Any, retriever: Any, questions: list[Any]) -> list[Answerable]:
    """Retrieve for every question that has a reference answer (in the config's `retrieval`
    mode, `top_k` passages) and fill the knowledge-base template; once, for all models."""
    from danlu.rag.ask import ground

    out = []
    for q in questions:
        if q.answer is not None:
            passages = retriever.search(q.text, cfg.top_k)
            out.append(
                Answerable(q, ground(q.text, passages, cfg.rag_template, cfg.score_threshold))
            )
    return out


def normalise(text: str) -> str:
    text = _CITATION.sub("", unicodedata.normalize("NFKC", text)).casefold()
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c)[0] != "P")


def match_scores(prediction: str, reference: str) -> dict[str, float]:
    """exact_match and contains of one answer, in percent (0 or 100)."""
    got, want = normalise(prediction), normalise(reference)
    return {"exact_match": 100.0 * (got == want), "contains": 100.0 * bool(want and want in got)}


def run(
    loaded: Any, cfg: Any, answerable: list[Answerable], decode: Any
) -> tuple[dict, list[dict]]:
    """This model's answers and scores. `decode(prompts)` -> texts is the generation task's
    decoding (same settings, stop tokens and batching)."""
    from danlu.data.types import Conversation, Message
    from danlu.eval.generation import score_predictions
    from danlu.eval.samples import build_generation_set

    asked = [a for a in answerable if a.grounded.refusal is None]
    convs = [_conversation(a, Conversation, Message) for a in asked]
    gset = build_generation_set(convs, loaded.tokenizer, cfg.template, cfg.cutoff_len)
    generated = iter(decode(gset.prompts) if gset.prompts else [])
    preds = [a.grounded.refusal if a.grounded.refusal is not None else next(generated)
             for a in answerable]  # fmt: skip
    refs = [a.question.answer for a in answerable]
    per, mean = score_predictions(preds, refs, cfg.metric_style)
    per = [{**m, **match_scores(p, r)} for m, p, r in zip(per, preds, refs, strict=True)]
    rows = [_row(a, p, m) for a, p, m in zip(answerable, preds, per, strict=True)]
    n = len(rows)
    result = {**mean, **{k: sum(m[k] for m in per) / n for k in ("exact_match", "contains")},
              "questions": n, "refused": n - len(asked), "truncated_prompts": gset.truncated}  # fmt: skip
    return result, rows


def _conversation(a: Answerable, conversation: Any, message: Any) -> Any:
    """The grounded prompt as a user turn, the reference as the answer to score against."""
    turns = [message("user", a.grounded.prompt), message("assistant", a.question.answer)]
    return conversation(turns, a.question.where)


def _row(a: Answerable, prediction: str, scores: dict[str, float]) -> dict[str, Any]:
    return {
        "source": a.question.where,
        "question": a.question.text,
        "passages": [p.source for p in a.grounded.passages],
        "prompt": a.grounded.prompt,
        "refused": a.grounded.refusal is not None,
        "reference": a.question.answer,
        "prediction": prediction,
        **scores,
    }
