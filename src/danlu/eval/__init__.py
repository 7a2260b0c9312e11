"""Evaluation (DESIGN §1 `danlu eval`): BLEU-4/ROUGE on generations, C-Eval/MMLU-style multiple
choice, perplexity, and side-by-side reports of several models (docs/eval.md).

    from danlu.eval import evaluate, compare, score_sample
    report = evaluate(load_config("eval.yaml"))           # what `danlu eval` runs
    compare({"base+lora": "runs/x/final"}, "examples/data/identity_eval.jsonl")   # the demo

Heavy imports (torch, transformers, jieba, nltk, matplotlib) happen only when a function runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compare", "evaluate", "masked_loss", "score_sample"]


def __getattr__(name: str) -> Any:
    if name in ("compare", "evaluate"):
        from danlu.eval import runner

        return getattr(runner, name)
    if name == "score_sample":
        from danlu.eval.metrics import score_sample

        return score_sample
    if name == "masked_loss":
        from danlu.eval.perplexity import masked_loss

        return masked_loss
    raise AttributeError(name)
