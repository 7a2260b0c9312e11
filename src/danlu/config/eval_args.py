"""Config section of `danlu eval`: which tasks, on which data, for which models, written where.

Generation and perplexity read `eval_data` through the same readers as `data:` (every format,
column maps, `max_samples`), and render with the same `template`, `cutoff_len` and loss mask as
training. Multiple choice reads benchmark files (`mc_data`, `mc_dev`) in the C-Eval/CMMLU CSV
or MMLU JSONL layouts. The batch size is `per_device_eval_batch_size`, shared with training's
evaluation. Its range and cross-key rules live in the one rule table, `rules.RULES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from danlu.config import methods as _methods  # noqa: F401  (earlier sections come first in dumps)
from danlu.config.schema import section
from danlu.config.sections import DataSource

EVAL_TASKS = ("generation", "multiple_choice", "perplexity")


@dataclass
class EvalModel:
    """One entry of `eval_models:` (a bare string is shorthand for `{path: ...}`)."""

    path: str
    """A model spec (as `model:`), or a PEFT adapter folder: then it is applied on top of `model:`."""
    adapter: str | None = None
    """A PEFT adapter folder to apply on top of `path`."""
    name: str | None = None
    """Label in the report; default: the path (plus `+adapter`) as written."""


@section("eval")
class EvalArgs:
    eval_task: list[str] = field(default_factory=list)
    """`danlu eval` tasks: generation, multiple_choice, perplexity, preference, retrieval (a
    list, or comma-separated). Empty = every task whose data is set: generation and perplexity
    on `eval_data`, multiple_choice on `mc_data`; preference (pairwise `eval_data`: how often
    the chosen answer wins) and retrieval (`retrieval_data` against `rag_index`) only when
    listed."""
    eval_data: list[DataSource] = field(default_factory=list)
    """Data for generation (the reference is each record's last assistant turn) and perplexity
    (loss-masked as in training): entries like `data:`'s, any format the data pipeline reads."""
    mc_data: str | None = None
    """Multiple-choice questions: a C-Eval/CMMLU CSV file (id, question, A-D, answer), a folder
    or glob of them, or MMLU-style JSON/JSONL (question, answer_a..answer_d or choices,
    correct_answer/answer, topic/subject)."""
    mc_dev: str | None = None
    """Few-shot examples for multiple choice, same layouts: the first `n_shot` of each subject."""
    n_shot: int = 0
    """Multiple choice: solved examples put before each question (0 = zero-shot)."""
    mc_language: Literal["auto", "en", "zh"] = "auto"
    """Multiple-choice prompt: `en` (MMLU: '... Answer:') or `zh` (C-Eval: '... 答案：');
    `auto` = zh when most questions contain Chinese characters."""
    mc_chat_template: bool = False
    """Multiple choice: wrap the prompt in the chat template (`template`) as one user turn and
    score the letter as the start of the assistant's reply. Off: the raw prompt (as lm-eval)."""
    eval_models: list[EvalModel] = field(default_factory=list)
    """Models to compare side by side, the first as the baseline. Each entry: a model spec, a PEFT
    adapter folder (applied on `model`), or {path, adapter, name}; e.g. [smollm2-135m-instruct,
    runs/x/final]. Empty = just `model` (+ `adapter`)."""
    eval_output_dir: str = "runs/eval"
    """Where report.json, report.md, report.png and per-model predictions.jsonl are written."""
    eval_max_samples: int | None = None
    """Evaluate only the first N records (generation, perplexity) / questions (multiple choice)."""
    eval_max_new_tokens: int = 256
    """Generation: most tokens generated per answer."""
    eval_do_sample: bool = False
    """Generation: sample (seeded with `seed`) instead of greedy decoding."""
    eval_temperature: float = 1.0
    """Generation with eval_do_sample: softmax temperature."""
    eval_top_p: float = 1.0
    """Generation with eval_do_sample: nucleus sampling mass."""
    metric_style: Literal["standard", "chatglm"] = "standard"
    """BLEU/ROUGE definition: `standard` = BLEU-4 and ROUGE-1/2/L on jieba words with clipped
    n-gram counts (rouge-score); `chatglm` = exactly ChatGLM's/LLaMA-Factory's scripts (BLEU-4 on
    characters, ROUGE on unique n-grams as rouge-chinese). See docs/eval.md."""
