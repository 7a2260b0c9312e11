"""The multiple-choice task: prompts (MMLU / C-Eval style), letter log-likelihoods, accuracy.

Prompt, exactly (`{subject}` is the subject's display name; k solved examples first):

    en: "The following are multiple choice questions (with answers) about {subject}.\\n\\n"
        + k x ("{question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer: {letter}\\n\\n")
        + "{question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer:"          scored: " A" ... " D"
    zh: "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\\n\\n"
        + k x ("{question}\\nA. ..\\nD. {d}\\n答案：{letter}\\n\\n") + "...\\n答案："   scored: "A" ... "D"

The English one is lm-evaluation-harness's `mmlu` task (question stripped, choices verbatim); the
Chinese one is C-Eval's official prompt (no space after 答案：). With `mc_chat_template` the
whole prompt is one user turn, and the letter (no space) starts the assistant's reply.

Scoring follows lm-eval's `loglikelihood`: context and context + continuation are tokenised
(the tokenizer's own special tokens in raw mode; none in chat mode, the template writes them),
the continuation is what the longer encoding adds, and the choice's score is the summed log-prob
of those tokens. When every letter adds exactly one token (the usual case), the four scores come
from ONE forward pass over the context and the next-token distribution at its last position;
otherwise each choice is scored by its own pass ("continuation" in predictions.jsonl). The
prediction is the first choice with the highest score (ties go to the earlier letter).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from danlu.eval.forward import kept_logprobs, length_batches, pad_right, progress
from danlu.eval.mc_data import LETTERS, Question
from danlu.utils.errors import UsageError

DESCRIPTION = {
    "en": "The following are multiple choice questions (with answers) about {subject}.\n\n",
    "zh": "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n",
}
CUE = {"en": "Answer:", "zh": "答案："}
DELIMITER = {"en": " ", "zh": ""}
_CJK = re.compile(r"[\u4e00-\u9fff]")


def detect_language(questions: Sequence[Question]) -> str:
    """`zh` when most questions contain a CJK ideograph, else `en` (mc_language: auto)."""
    zh = sum(1 for q in questions if _CJK.search(q.question))
    return "zh" if zh * 2 > len(questions) else "en"


def format_question(q: Question, lang: str, with_answer: bool = False) -> str:
    lines = [
        q.question.strip(),
        *(f"{letter}. {c}" for letter, c in zip(LETTERS, q.choices, strict=True)),
    ]
    text = "\n".join(lines) + "\n" + CUE[lang]
    return text + DELIMITER[lang] + q.answer if with_answer else text


def build_prompt(q: Question, shots: Sequence[Question], lang: str) -> str:
    subject = (q.names[0] if lang == "en" else q.names[1]) or q.subject.replace("_", " ")
    examples = "".join(format_question(s, lang, with_answer=True) + "\n\n" for s in shots)
    return DESCRIPTION[lang].format(subject=subject) + examples + format_question(q, lang)


def pick_shots(
    questions: Sequence[Question], dev: Sequence[Question], n: int
) -> dict[str, list[Question]]:
    """subject -> its first `n` dev examples (lm-eval's first_n), never the question itself."""
    if n == 0:
        return {}
    by_subject: dict[str, list[Question]] = defaultdict(list)
    for d in dev:
        by_subject[d.subject].append(d)
    missing = sorted({q.subject for q in questions} - set(by_subject))
    if missing:
        raise UsageError(f"mc_dev: no examples for subject '{missing[0]}' (n_shot {n})")
    return {s: qs[: n + 1] for s, qs in by_subject.items()}  # one spare, in case it is the question


def shots_for(q: Question, shots: dict[str, list[Question]], n: int) -> list[Question]:
    return [s for s in shots.get(q.subject, []) if s.source != q.source][:n]


@dataclass
class Request:
    """One question, tokenised: the context and what each letter adds to it."""

    context: list[int]
    continuations: list[list[int]]

    @property
    def one_token(self) -> bool:
        return all(len(c) == 1 for c in self.continuations)


def encode_request(tokenizer: Any, prompt: str, lang: str, chat_template: Any = None) -> Request:
    """lm-eval's `_encode_pair` for each letter (raw mode: trailing whitespace of the context
    moves into the continuation); in chat mode the prompt becomes one rendered user turn."""
    special = chat_template is None
    if chat_template is not None:
        context = chat_template.render(
            tokenizer, [{"role": "user", "content": prompt}], generation_prompt=True
        )
        conts = list(LETTERS)
    else:
        context, conts = prompt, [DELIMITER[lang] + letter for letter in LETTERS]
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, conts = context[:-spaces], [context[-spaces:] + c for c in conts]
    ctx = _encode(tokenizer, context, special)
    return Request(ctx, [_encode(tokenizer, context + c, special)[len(ctx) :] for c in conts])


def _encode(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


@dataclass
class _Row:
    input_ids: list[int]
    picks: list[tuple[int, int]]
    """(position, token id): the log-prob of token id given the input up to position."""
    request: int
    choice: int
    """-1: the row scores all four letters (one-token path); else the choice it scores."""


def _rows(requests: Sequence[Request], max_len: int) -> list[_Row]:
    rows = []
    for i, r in enumerate(requests):
        if r.one_token:
            ctx = r.context[-max_len:]
            rows.append(_Row(ctx, [(len(ctx) - 1, c[0]) for c in r.continuations], i, -1))
            continue
        for j, cont in enumerate(r.continuations):
            inp = (r.context + cont)[-(max_len + 1) :][:-1]  # lm-eval's left truncation
            start = len(inp) - len(cont)
            rows.append(_Row(inp, [(start + k, t) for k, t in enumerate(cont)], i, j))
    return rows


def score_requests(
    model: Any, requests: Sequence[Request], pad_id: int, batch_size: int = 8, quiet: bool = True
) -> list[list[float]]:
    """The four choice log-likelihoods of each request."""
    max_len = int(getattr(getattr(model, "config", None), "max_position_embeddings", 0) or 2048)
    rows = _rows(requests, max_len)
    scores = [[0.0] * len(LETTERS) for _ in requests]
    batches = length_batches([len(r.input_ids) for r in rows], batch_size)
    for batch in progress(batches, len(batches), "multiple choice", quiet):
        for row, values in zip(
            [rows[i] for i in batch],
            _score_batch(model, [rows[i] for i in batch], pad_id),
            strict=True,
        ):
            if row.choice < 0:
                scores[row.request] = values
            else:
                scores[row.request][row.choice] = sum(values)
    return scores


def _score_batch(model: Any, rows: list[_Row], pad_id: int) -> list[list[float]]:
    import torch

    ids, mask = pad_right([r.input_ids for r in rows], pad_id)
    keep = torch.zeros_like(ids, dtype=torch.bool)
    for b, r in enumerate(rows):
        for pos, _ in r.picks:
            keep[b, pos] = True
    logprobs = kept_logprobs(model, ids, mask, keep).cpu()
    index = {(int(b), int(t)): k for k, (b, t) in enumerate(keep.nonzero().tolist())}
    return [
        [float(logprobs[index[(b, pos)], tok]) for pos, tok in r.picks] for b, r in enumerate(rows)
    ]


def predict(scores: Sequence[float]) -> str:
    """The letter of the first highest score."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return LETTERS[best]


def accuracy(questions: Sequence[Question], predictions: Sequence[str]) -> dict[str, Any]:
    """Micro (over questions) and macro (mean of per-subject) accuracy, in percent."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for q, p in zip(questions, predictions, strict=True):
        per[q.subject][0] += int(p == q.answer)
        per[q.subject][1] += 1
    subjects = {
        s: {"correct": c, "total": t, "accuracy": 100 * c / t} for s, (c, t) in sorted(per.items())
    }
    correct = sum(c for c, _ in per.values())
    return {
        "accuracy_micro": 100 * correct / len(questions),
        "accuracy_macro": sum(v["accuracy"] for v in subjects.values()) / len(subjects),
        "correct": correct,
        "total": len(questions),
        "subjects": subjects,
    }
