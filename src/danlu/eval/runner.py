"""`danlu eval`: every task for every model, predictions per model/task, one side-by-side report.

All input is read and checked before the first model loads, so a bad benchmark row or data file
fails in a second with its file:line, not after minutes of generation. Models are evaluated one
after the other (only one is in memory at a time). Layout of `eval_output_dir`:

    config.yaml                          the resolved config
    report.json, report.md, report.png   all models side by side (png: needs matplotlib)
    <model>/<task>/predictions.jsonl     one line per sample/question
    <model>/<task>/scores.json           that model's scores on that task
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from danlu.eval.models import EvalTarget, resolve_targets
from danlu.eval.rag_answers import TASK as ANSWERS
from danlu.utils.errors import UsageError

TASKS = ("generation", "multiple_choice", "perplexity", "preference", "retrieval")
RETRIEVAL_MODES = ("hybrid", "dense", "bm25")
_log = logging.getLogger("danlu.eval")
Say = Callable[[str], None]


def resolve_tasks(cfg: Any) -> list[str]:
    """`eval_task`, or (when empty) every task whose data is configured, in a fixed order."""
    asked = set(cfg.eval_task)
    if not asked:
        asked = ({"generation", "perplexity"} if cfg.eval_data else set()) | (
            {"multiple_choice"} if cfg.mc_data else set()
        )
    if not asked:
        raise UsageError(
            "eval: nothing to evaluate: set eval_data (generation, perplexity) and/or mc_data (multiple_choice)"
        )
    return [t for t in TASKS if t in asked]


@dataclass
class Inputs:
    """Everything read from disk once, shared by every model."""

    convs: list[Any] = field(default_factory=list)
    conv_stats: list[dict] = field(default_factory=list)
    questions: Any = None
    dev: Any = None
    language: str = "en"
    shots: dict[str, list[Any]] = field(default_factory=dict)
    answerable: list[Any] = field(default_factory=list)
    """The retrieval questions with a reference answer, grounded (danlu.eval.rag_answers)."""


def read_inputs(cfg: Any, tasks: list[str]) -> Inputs:
    from danlu.eval.samples import read_conversations

    out = Inputs()
    if {"generation", "perplexity", "preference"} & set(tasks):
        out.convs, out.conv_stats = read_conversations(
            cfg.eval_data, cfg.on_bad_record, cfg.eval_max_samples
        )
    if "multiple_choice" in tasks:
        _read_questions(cfg, out)
    return out


def _read_questions(cfg: Any, out: Inputs) -> None:
    from danlu.eval.choice import detect_language, pick_shots
    from danlu.eval.mc_data import load_questions

    out.questions = load_questions(cfg.mc_data, "mc_data", cfg.on_bad_record, cfg.eval_max_samples)
    if cfg.n_shot > 0:
        out.dev = load_questions(cfg.mc_dev, "mc_dev", cfg.on_bad_record)
        out.shots = pick_shots(out.questions.questions, out.dev.questions, cfg.n_shot)
    lang = cfg.mc_language
    out.language = detect_language(out.questions.questions) if lang == "auto" else lang


def evaluate(cfg: Any, log: Say | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run `danlu eval` for a validated Config; write and return the report."""
    from danlu.config import save_config
    from danlu.eval.report import answers_entry, new_report, write_report
    from danlu.models import load_model

    say = log or _log.info
    tasks = resolve_tasks(cfg)
    targets = resolve_targets(cfg)
    inputs = read_inputs(cfg, tasks)
    out = Path(cfg.eval_output_dir).expanduser()
    report = new_report(cfg, tasks, targets, inputs)
    if "retrieval" in tasks:  # of the index, not of a model: once, in each retrieval mode
        report["tasks"]["retrieval"]["results"] = _retrieval(cfg, say, inputs)
        tasks = [t for t in tasks if t != "retrieval"]
        if inputs.answerable:  # then each model answers them from the retrieved passages
            report["tasks"][ANSWERS] = answers_entry(cfg, len(inputs.answerable))
            tasks.append(ANSWERS)
    for target in targets if tasks else []:
        start = time.perf_counter()
        loaded = load_model(target.model_args, head=_head(target, tasks))
        say(f"eval: {target.name}: loaded in {time.perf_counter() - start:.1f}s")
        for task in tasks:
            result = _run_task(task, loaded, cfg, inputs, out / target.slug / task, quiet)
            report["tasks"][task]["results"][target.name] = result
            say(
                f"eval: {target.name}: {task}: {_headline(task, result)} ({result['seconds']:.1f}s)"
            )
        del loaded
        _free_memory()
    save_config(cfg, out / "config.yaml")
    written = write_report(report, out)
    say(f"eval: report written to {', '.join(str(p) for p in written)}")
    return report


def _retrieval(cfg: Any, say: Say, inputs: Inputs) -> dict[str, Any]:
    """Scores per retrieval mode; grounds the questions that have answers into `inputs`."""
    from danlu.eval.rag_answers import ground_questions
    from danlu.rag import open_index
    from danlu.rag.evaluate import evaluate_retrieval, read_questions

    questions = read_questions(cfg.retrieval_data)
    store, _, retriever = open_index(cfg)
    results = {}
    try:
        for mode in RETRIEVAL_MODES:
            start = time.perf_counter()
            result = evaluate_retrieval(retriever, questions, cfg.top_k, mode)
            results[mode] = {**result, "seconds": round(time.perf_counter() - start, 3)}
            say(f"eval: retrieval {mode}: {_headline('retrieval', results[mode])}")
        inputs.answerable = ground_questions(cfg, retriever, questions)
    finally:
        store.close()
    return results


def _head(target: EvalTarget, tasks: list[str]) -> str:
    """A reward model (stage rm's result) loads with its score head, for `preference` only."""
    from danlu.eval.preference import reward_model_files

    if not reward_model_files(target.model_args):
        return "causal"
    if tasks != ["preference"]:
        raise UsageError(
            f"eval: {target.name} is a reward model: it scores pairs (eval_task: [preference]) "
            "but does not generate text or have a perplexity"
        )
    return "score"


def _free_memory() -> None:
    """Release one model before the next loads (they are evaluated one at a time)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _headline(task: str, r: dict[str, Any]) -> str:
    if task == "generation":
        return ", ".join(f"{k} {r[k]:.2f}" for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"))
    if task == "multiple_choice":
        return f"accuracy {r['accuracy_micro']:.2f} (macro {r['accuracy_macro']:.2f}) on {r['total']} questions"
    if task == "preference":
        shown = [f"{k} {r[k]:.1f}" for k in ("accuracy", "logp_accuracy") if k in r]
        return f"{', '.join(shown)} on {r['pairs']} pairs ({r['scorer']})"
    if task == "retrieval":
        return ", ".join(f"{k} {v}" for k, v in r.items() if k.startswith(("recall", "mrr")))
    if task == ANSWERS:
        return (f"exact match {r['exact_match']:.1f}, contains {r['contains']:.1f}, rouge-l "
                f"{r['rouge-l']:.2f} on {r['questions']} questions ({r['refused']} refused)")  # fmt: skip
    return f"loss {r['loss']:.4f}, perplexity {r['perplexity']:.3f} on {r['tokens']} tokens"


def _run_task(
    task: str, loaded: Any, cfg: Any, inputs: Inputs, folder: Path, quiet: bool
) -> dict[str, Any]:
    runner = {
        "generation": _generation,
        "multiple_choice": _multiple_choice,
        "perplexity": _perplexity,
        "preference": _preference,
        ANSWERS: _answers,
    }[task]
    start = time.perf_counter()
    result, rows = runner(loaded, cfg, inputs, quiet)
    result["seconds"] = round(time.perf_counter() - start, 3)
    folder.mkdir(parents=True, exist_ok=True)
    _write_jsonl(folder / "predictions.jsonl", rows)
    (folder / "scores.json").write_text(
        json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    result["predictions"] = str(folder / "predictions.jsonl")
    return result


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _generation(loaded: Any, cfg: Any, inputs: Inputs, quiet: bool) -> tuple[dict, list[dict]]:
    from danlu.eval.generation import score_predictions
    from danlu.eval.samples import build_generation_set

    tok = loaded.tokenizer
    gset = build_generation_set(inputs.convs, tok, cfg.template, cfg.cutoff_len)
    if not gset.prompts:
        reasons = ", ".join(f"{n} {r}" for r, n in gset.dropped.items())
        raise UsageError(f"eval_data: no record to generate for (dropped: {reasons})")
    preds = _decode(loaded, cfg, gset.prompts, quiet)
    per, mean = score_predictions(preds, gset.references, cfg.metric_style)
    rows = [{"source": s, "prompt": tok.decode(p), "reference": r, "prediction": y, **m}
            for s, p, r, y, m in zip(gset.sources, gset.prompts, gset.references, preds, per, strict=True)]  # fmt: skip
    result = {
        **mean,
        "samples": len(rows),
        "truncated_prompts": gset.truncated,
        "dropped": dict(gset.dropped),
    }
    return result, rows


def _decode(loaded: Any, cfg: Any, prompts: list[list[int]], quiet: bool) -> list[str]:
    """The eval_* decoding settings, stopping at EOS or the template's end of turn."""
    from danlu.data.templates import stop_ids
    from danlu.eval.generation import GenerationSettings, generate
    from danlu.eval.samples import template_for

    tok = loaded.tokenizer
    settings = GenerationSettings(cfg.eval_max_new_tokens, cfg.eval_do_sample, cfg.eval_temperature,
                                  cfg.eval_top_p, cfg.seed, cfg.per_device_eval_batch_size)  # fmt: skip
    generation_config = getattr(loaded.model, "generation_config", None)
    stop = sorted(stop_ids(tok, template_for(cfg.template, tok), generation_config))
    return generate(loaded.model, tok, prompts, settings, stop, quiet)


def _answers(loaded: Any, cfg: Any, inputs: Inputs, quiet: bool) -> tuple[dict, list[dict]]:
    from danlu.eval.rag_answers import run

    return run(loaded, cfg, inputs.answerable, lambda p: _decode(loaded, cfg, p, quiet))


def _multiple_choice(loaded: Any, cfg: Any, inputs: Inputs, quiet: bool) -> tuple[dict, list[dict]]:
    from danlu.eval.choice import (
        accuracy,
        build_prompt,
        encode_request,
        predict,
        score_requests,
        shots_for,
    )
    from danlu.eval.mc_data import LETTERS
    from danlu.eval.samples import template_for

    tok, questions = loaded.tokenizer, inputs.questions.questions
    chat = template_for(cfg.template, tok) if cfg.mc_chat_template else None
    prompts = [
        build_prompt(q, shots_for(q, inputs.shots, cfg.n_shot), inputs.language) for q in questions
    ]
    requests = [encode_request(tok, p, inputs.language, chat) for p in prompts]
    scores = score_requests(
        loaded.model, requests, tok.pad_token_id, cfg.per_device_eval_batch_size, quiet
    )
    preds = [predict(s) for s in scores]
    rows = [{"source": q.source, "subject": q.subject, "answer": q.answer, "prediction": p,
             "correct": p == q.answer, "logprobs": dict(zip(LETTERS, s, strict=True)),
             "scoring": "last-token" if r.one_token else "continuation"}
            for q, p, s, r in zip(questions, preds, scores, requests, strict=True)]  # fmt: skip
    one = sum(1 for r in requests if r.one_token)
    result = {**accuracy(questions, preds), "one_forward_questions": one,
              "continuation_questions": len(requests) - one, "example_prompt": prompts[0]}  # fmt: skip
    return result, rows


def _perplexity(loaded: Any, cfg: Any, inputs: Inputs, quiet: bool) -> tuple[dict, list[dict]]:
    from danlu.eval.perplexity import encode_for_loss, masked_loss

    tok = loaded.tokenizer
    enc = encode_for_loss(inputs.convs, tok, cfg.section("data"))
    if not enc.rows:
        reasons = ", ".join(f"{n} {r}" for r, n in enc.dropped.items())
        raise UsageError(f"eval_data: no record left to score (dropped: {reasons})")
    stats = masked_loss(
        loaded.model, enc.rows, tok.pad_token_id, cfg.per_device_eval_batch_size, quiet
    )
    rows = [{"source": s, "tokens": n, "loss": (nll / n) if n else None}
            for s, (nll, n) in zip(enc.sources, stats.per_sample, strict=True)]  # fmt: skip
    result = {"loss": stats.loss, "perplexity": stats.perplexity, "tokens": stats.tokens,
              "samples": stats.samples, "truncated": enc.truncated, "dropped": dict(enc.dropped)}  # fmt: skip
    return result, rows


def _preference(loaded: Any, cfg: Any, inputs: Inputs, quiet: bool) -> tuple[dict, list[dict]]:
    from danlu.eval.preference import run

    return run(loaded, cfg, inputs.convs, quiet)


def compare(
    adapters: dict[str, str] | list[str], eval_data: str | list[str], *,
    model: str = "smollm2-135m-instruct", output_dir: str = "runs/eval-compare",
    tasks: tuple[str, ...] = ("generation", "perplexity"), base_name: str = "base",
    settings: dict[str, Any] | None = None, log: Say | None = print, quiet: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Base model vs base + each adapter on `eval_data`; writes the report and prints its table.

    For `make demo`: `compare({"base+lora": "runs/sft-lora-demo/final"},
    "examples/data/identity_eval.jsonl")`. `settings` sets any other config key
    (e.g. {"eval_max_new_tokens": 64}).
    """
    from danlu.config import load_config
    from danlu.eval.report import glance_markdown

    named = (
        adapters
        if isinstance(adapters, dict)
        else {f"{base_name}+{Path(a).name}": a for a in adapters}
    )
    entries = [{"path": model, "name": base_name}]
    entries += [{"path": model, "adapter": path, "name": name} for name, path in named.items()]
    cfg = load_config(None).replace(
        model=model,
        eval_models=entries,
        eval_data=eval_data,
        eval_task=list(tasks),
        eval_output_dir=output_dir,
        **(settings or {}),
    )
    report = evaluate(cfg, log=log, quiet=quiet)
    if log is not None:
        log(glance_markdown(report))
    return report


__all__ = ["TASKS", "EvalTarget", "compare", "evaluate", "read_inputs", "resolve_tasks"]
