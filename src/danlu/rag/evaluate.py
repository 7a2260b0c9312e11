"""Retrieval quality: recall@k and MRR of an index on questions whose answer's source is known.

A question file is jsonl: `{"question": ..., "source": "tea-guide.md"}` (or a list of
sources), with an optional reference `"answer"` that `danlu eval` scores each model's grounded
answer against (danlu.eval.rag_answers).

A gold source matches a passage when it names the passage's file (as a trailing part of its
path: `tea-guide.md` matches `examples/docs/tea-guide.md#3`) or the passage itself
(`tea-guide.md#3`). recall@k: the share of questions with a match among the first k passages;
MRR: the mean of 1 / rank of the first match (0 when none is within k).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError


@dataclass(frozen=True)
class Question:
    text: str
    sources: tuple[str, ...]
    where: str
    """file:line, for messages."""
    answer: str | None = None
    """The reference answer, when the record gives one."""


def read_questions(path: str) -> list[Question]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"eval_data: {path}: no such file")
    out = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: invalid JSON ({exc.msg})") from exc
        out.append(_question(record, where))
    if not out:
        raise UsageError(f"eval_data: {path}: no questions")
    return out


def _question(record: Any, where: str) -> Question:
    if not isinstance(record, dict) or not isinstance(record.get("question"), str):
        raise UsageError(f"{where}: a retrieval record needs a 'question' string")
    sources = record.get("source", record.get("sources"))
    sources = [sources] if isinstance(sources, str) else sources
    if not sources or not all(isinstance(s, str) and s for s in sources):
        raise UsageError(f"{where}: a retrieval record needs a 'source' (a file or file#N)")
    answer = record.get("answer")
    if answer is not None and not (isinstance(answer, str) and answer.strip()):
        raise UsageError(f"{where}: 'answer' must be a non-empty string (the reference answer)")
    return Question(record["question"], tuple(sources), where, answer)


def matches(gold: str, passage: str) -> bool:
    if "#" in gold:
        return passage == gold or passage.endswith("/" + gold)
    file = passage.rsplit("#", 1)[0]
    return file == gold or file.endswith("/" + gold)


def first_match(question: Question, sources: list[str]) -> int | None:
    """1-based rank of the first passage that matches one of the question's sources."""
    for rank, source in enumerate(sources, 1):
        if any(matches(g, source) for g in question.sources):
            return rank
    return None


def score(ranks: list[int | None], k: int) -> dict[str, float]:
    n = len(ranks)
    hits = [r for r in ranks if r is not None and r <= k]
    return {f"recall@{k}": round(100 * len(hits) / n, 2),
            f"mrr@{k}": round(sum(1 / r for r in hits) / n, 4), "questions": n}  # fmt: skip


def evaluate_retrieval(retriever: Any, questions: list[Question], k: int, mode: str) -> dict:
    """recall@k and MRR@k of `retriever` in `mode` (hybrid | dense | bm25)."""
    ranks = [
        first_match(q, [p.source for p in retriever.search(q.text, k, mode=mode)])
        for q in questions
    ]
    return score(ranks, k)
