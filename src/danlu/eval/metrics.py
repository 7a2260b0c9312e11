"""BLEU-4 and ROUGE-1/2/L of one generated answer against its reference, in percent (0-100).

Two documented definitions (`metric_style`), both pinned by tests against the reference code:

* `standard` (default). Both texts are split into words by jieba (Chinese is segmented into
  words; other text into runs of letters/digits and single punctuation marks); whitespace is
  dropped. BLEU-4 = nltk `sentence_bleu([ref], hyp)` with uniform 4-gram weights and
  `SmoothingFunction().method3` (the smoothing ChatGLM's and LLaMA-Factory's scripts use).
  ROUGE-N = F1 of n-gram overlap with clipped counts, ROUGE-L = F1 of the longest common
  subsequence: exactly Google's `rouge-score` given the same words (no stemming, no lowercasing).
* `chatglm`: exactly what ChatGLM's `ptuning/main.py` and LLaMA-Factory's `ComputeSimilarity`
  compute, so numbers compare with theirs: BLEU-4 as above but over characters (spaces
  included), ROUGE via `rouge-chinese` defaults on jieba words, which counts *unique* n-grams
  (a repeated phrase is counted once) and adds 1e-8 to the F1 denominator.

A sample whose prediction or reference has no word scores 0 on every metric (LLaMA-Factory's
rule; ChatGLM's script crashes there), except `chatglm` BLEU, which LLaMA-Factory computes on
the characters regardless.
"""

from __future__ import annotations

import functools
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from danlu.utils.errors import UsageError

METRICS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
STYLES = ("standard", "chatglm")


@functools.lru_cache(maxsize=1)
def _jieba() -> Any:
    try:
        import jieba
    except ImportError:
        raise UsageError("generation metrics need jieba: pip install 'danlu[eval]'") from None
    import logging

    jieba.setLogLevel(logging.WARNING)  # it prints "Building prefix dict..." on first use
    return jieba


def words(text: str) -> list[str]:
    """The words BLEU/ROUGE count: jieba's segmentation without the whitespace tokens."""
    return [t for t in _jieba().cut(text) if t.strip()]


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, hyp_total: int, ref_total: int, eps: float = 0.0) -> float:
    p = overlap / hyp_total if hyp_total else 0.0
    r = overlap / ref_total if ref_total else 0.0
    if eps:
        return 2.0 * (p * r) / (p + r + eps)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def rouge_n(hyp: Sequence[str], ref: Sequence[str], n: int, unique: bool = False) -> float:
    """ROUGE-N F1 in [0, 1]: clipped n-gram counts, or unique n-grams (rouge-chinese)."""
    h, r = _ngrams(hyp, n), _ngrams(ref, n)
    if unique:
        return _f1(len(h.keys() & r.keys()), len(h), len(r), eps=1e-8)
    overlap = sum((h & r).values())
    return _f1(overlap, sum(h.values()), sum(r.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(len(b)) memory)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: Sequence[str], ref: Sequence[str], eps: float = 0.0) -> float:
    """ROUGE-L F1 in [0, 1] over the whole token sequences (no sentence splitting)."""
    return _f1(lcs_length(hyp, ref), len(hyp), len(ref), eps)


def bleu4(hyp: Sequence[str], ref: Sequence[str]) -> float:
    """nltk sentence BLEU-4 in [0, 1] with smoothing method3 (NIST geometric sequence)."""
    try:
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    except ImportError:
        raise UsageError("BLEU needs nltk: pip install 'danlu[eval]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # nltk warns on zero n-gram overlaps, which smoothing handles
        return float(
            sentence_bleu([list(ref)], list(hyp), smoothing_function=SmoothingFunction().method3)
        )


def score_sample(prediction: str, reference: str, style: str = "standard") -> dict[str, float]:
    """BLEU-4, ROUGE-1/2/L of one prediction, in percent, by the `metric_style` definition."""
    if style not in STYLES:
        raise ValueError(f"metric style must be one of {STYLES}, got {style!r}")
    hyp, ref = words(prediction), words(reference)
    scores = dict.fromkeys(METRICS, 0.0)
    if style == "chatglm":
        # LLaMA-Factory computes the character BLEU even when the word lists are empty
        scores["bleu-4"] = (
            bleu4(list(prediction), list(reference)) if prediction and reference else 0.0
        )
        if hyp and ref:
            scores.update({
                "rouge-1": rouge_n(hyp, ref, 1, unique=True),
                "rouge-2": rouge_n(hyp, ref, 2, unique=True),
                "rouge-l": rouge_l(hyp, ref, eps=1e-8),
            })  # fmt: skip
    elif hyp and ref:
        scores = {
            "bleu-4": bleu4(hyp, ref),
            "rouge-1": rouge_n(hyp, ref, 1),
            "rouge-2": rouge_n(hyp, ref, 2),
            "rouge-l": rouge_l(hyp, ref),
        }
    return {k: v * 100 for k, v in scores.items()}


def average(samples: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over samples (the corpus score ChatGLM and LLaMA-Factory report)."""
    rows = list(samples)
    if not rows:
        return dict.fromkeys(METRICS, 0.0)
    return {k: sum(r[k] for r in rows) / len(rows) for k in METRICS}
