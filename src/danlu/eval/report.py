"""report.json, report.md and report.png: every model side by side, the first as the baseline.

The "at a glance" table puts each task's headline metrics in one row per metric with one column
per model and, for every later model, its difference from the first: domain gain (generation
scores up, perplexity down) and general-ability loss (multiple-choice accuracy down) read off
one table and one chart.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from danlu.eval.rag_answers import TASK as ANSWERS

# (task, result key, label, higher is better)
HEADLINE: list[tuple[str, str, str, bool]] = [
    ("generation", "bleu-4", "BLEU-4", True),
    ("generation", "rouge-1", "ROUGE-1", True),
    ("generation", "rouge-2", "ROUGE-2", True),
    ("generation", "rouge-l", "ROUGE-L", True),
    ("multiple_choice", "accuracy_micro", "accuracy (micro) %", True),
    ("multiple_choice", "accuracy_macro", "accuracy (macro) %", True),
    ("perplexity", "perplexity", "perplexity", False),
    ("perplexity", "loss", "loss", False),
    ("preference", "accuracy", "pair accuracy %", True),
    ("preference", "logp_accuracy", "log-prob pair accuracy %", True),
    ("preference", "avg_logp_accuracy", "avg log-prob pair accuracy %", True),
    (ANSWERS, "contains", "answer contains reference %", True),
    (ANSWERS, "exact_match", "exact match %", True),
    (ANSWERS, "rouge-l", "ROUGE-L", True),
]
PANELS = ("generation", "multiple_choice", "perplexity", "preference", ANSWERS)


def new_report(cfg: Any, tasks: list[str], targets: list[Any], inputs: Any) -> dict[str, Any]:
    from danlu import __version__

    report: dict[str, Any] = {
        "danlu": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.source,
        "models": [
            {
                "name": t.name,
                "model": t.model_args.model,
                "adapter": t.model_args.adapter,
                "folder": t.slug,
            }
            for t in targets
        ],
        "tasks": {},
    }
    data = [s.path for s in cfg.eval_data]
    for task in tasks:
        entry: dict[str, Any] = {"results": {}}
        if task == "generation":
            entry.update(data=data, records=inputs.conv_stats, metric_style=cfg.metric_style,
                         decoding=_decoding(cfg), template=cfg.template)  # fmt: skip
        elif task == "preference":
            entry.update(data=data, records=inputs.conv_stats, template=cfg.template,
                         cutoff_len=cfg.cutoff_len)  # fmt: skip
        elif task == "retrieval":
            entry.update(data=[cfg.retrieval_data], index=cfg.rag_index, top_k=cfg.top_k)
        elif task == "perplexity":
            entry.update(
                data=data,
                records=inputs.conv_stats,
                template=cfg.template,
                cutoff_len=cfg.cutoff_len,
            )
        else:
            entry.update(_mc_entry(cfg, inputs))
        report["tasks"][task] = entry
    return report


def answers_entry(cfg: Any, questions: int) -> dict[str, Any]:
    """The report entry of the retrieval task's answers (its results are per model)."""
    return {"results": {}, "data": [cfg.retrieval_data], "index": cfg.rag_index,
            "top_k": cfg.top_k, "retrieval": cfg.retrieval, "questions": questions,
            "decoding": _decoding(cfg), "template": cfg.template}  # fmt: skip


def _decoding(cfg: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"max_new_tokens": cfg.eval_max_new_tokens, "do_sample": cfg.eval_do_sample}
    if cfg.eval_do_sample:
        d.update(temperature=cfg.eval_temperature, top_p=cfg.eval_top_p, seed=cfg.seed)
    return d


def _mc_entry(cfg: Any, inputs: Any) -> dict[str, Any]:
    qs = inputs.questions
    return {
        "data": cfg.mc_data, "dev": cfg.mc_dev if cfg.n_shot else None, "n_shot": cfg.n_shot,
        "language": inputs.language, "chat_template": cfg.mc_chat_template,
        "questions": len(qs.questions), "subjects": len({q.subject for q in qs.questions}),
        "header_rows_skipped": qs.header_rows, "skipped": dict(qs.skipped),
    }  # fmt: skip


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """Write report.json, report.md and (when matplotlib is installed) report.png."""
    out.mkdir(parents=True, exist_ok=True)
    written = [
        _atomic_text(out / "report.json", json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    ]
    written.append(_atomic_text(out / "report.md", markdown(report)))
    png = write_chart(report, out / "report.png")
    if png is not None:
        written.append(png)
    return written


def _atomic_text(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _models(report: dict[str, Any]) -> list[str]:
    return [m["name"] for m in report["models"]]


def glance_rows(report: dict[str, Any]) -> list[list[str]]:
    """Header + one row per headline metric: label, value per model, delta per later model."""
    names = _models(report)
    header = ["task", "metric", *names, *(f"Δ {n}" for n in names[1:])]
    rows = [header]
    for task, key, label, higher in HEADLINE:
        results = report["tasks"].get(task, {}).get("results", {})
        values = [results.get(n, {}).get(key) for n in names]
        if all(v is None for v in values):
            continue
        arrow = "↑" if higher else "↓"
        deltas = [_delta(v, values[0]) for v in values[1:]]
        rows.append([task, f"{label} {arrow}", *(_fmt(v) for v in values), *deltas])
    return rows


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}" if abs(v) >= 0.01 or v == 0 else f"{v:.4g}"


def _delta(v: float | None, base: float | None) -> str:
    return "-" if v is None or base is None else f"{v - base:+.2f}"


def _table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def glance_markdown(report: dict[str, Any]) -> str:
    rows = glance_rows(report)
    text = "## At a glance\n\n" + _table(rows) + "\n" if len(rows) > 1 else ""
    if "retrieval" in report["tasks"]:  # the index's scores, one row per retrieval mode
        text += "\n" + _retrieval_section(report["tasks"]["retrieval"])
    return text


def markdown(report: dict[str, Any]) -> str:
    parts = [f"# danlu eval report\n\n{report['created']}, danlu {report['danlu']}"
             + (f", config `{report['config']}`" if report["config"] else "") + "\n",
             "Models: " + "; ".join(_model_line(m) for m in report["models"]) + "\n",
             glance_markdown(report)]  # fmt: skip
    for task, entry in report["tasks"].items():
        if task != "retrieval":  # already in the glance
            parts.append(_task_section(task, entry, _models(report)))
    return "\n".join(parts)


def _model_line(m: dict[str, Any]) -> str:
    adapter = f" + adapter `{m['adapter']}`" if m["adapter"] else ""
    return f"**{m['name']}** = `{m['model']}`{adapter}"


def _task_section(task: str, entry: dict[str, Any], names: list[str]) -> str:
    results = entry["results"]
    lines = [f"## {task}\n"]
    if task == "retrieval":
        return _retrieval_section(entry)
    if task == "multiple_choice":
        lines.append(f"`{entry['data']}`: {entry['questions']} questions, {entry['subjects']} subjects, "
                     f"{entry['n_shot']}-shot, prompt `{entry['language']}`, chat template "
                     f"{'on' if entry['chat_template'] else 'off'}\n")  # fmt: skip
        rows = [["subject", *names]]
        subjects = sorted({s for n in names for s in results.get(n, {}).get("subjects", {})})
        for s in subjects:
            rows.append([s, *(_subject_cell(results.get(n, {}), s) for n in names)])
        lines.append(_table(rows) + "\n")
    else:
        lines.append("data: " + ", ".join(f"`{d}`" for d in entry["data"]) + "\n")
        keys = {
            "generation": ["samples", "truncated_prompts", "dropped"],
            "preference": ["pairs", "scorer", "margin", "dropped"],
            ANSWERS: [
                "questions",
                "refused",
                "exact_match",
                "contains",
                "rouge-l",
                "bleu-4",
                "truncated_prompts",
            ],
        }.get(task, ["samples", "tokens", "truncated", "dropped"])
        rows = [["", *names]] + [
            [k, *(_cell(results.get(n, {}).get(k, "-")) for n in names)] for k in [*keys, "seconds"]
        ]
        lines.append(_table(rows) + "\n")
    for n in names:
        if n in results:
            lines.append(f"- {n}: predictions in `{results[n]['predictions']}`")
    return "\n".join(lines) + "\n"


def _retrieval_section(entry: dict[str, Any]) -> str:
    """One row per retrieval mode: the index's scores do not depend on the models."""
    k = entry["top_k"]
    rows = [["retrieval", f"recall@{k} %", f"MRR@{k}", "questions", "seconds"]]
    for mode, r in entry["results"].items():
        rows.append([mode, _fmt(r[f"recall@{k}"]), f"{r[f'mrr@{k}']:.4f}", str(r["questions"]),
                     str(r["seconds"])])  # fmt: skip
    return (f"## retrieval\n\nindex `{entry['index']}`, questions `{entry['data'][0]}`\n\n"
            + _table(rows) + "\n")  # fmt: skip


def _cell(v: Any) -> str:
    return _fmt(v) if isinstance(v, float) else str(v)


def _subject_cell(result: dict[str, Any], subject: str) -> str:
    s = result.get("subjects", {}).get(subject)
    return "-" if s is None else f"{s['accuracy']:.1f} ({s['correct']}/{s['total']})"


def write_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Grouped bars, one panel per task; None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    names = _models(report)
    panels = [t for t in PANELS if t in report["tasks"]]
    if not panels:  # retrieval alone: its table says it all
        return None
    fig = Figure(figsize=(5 * len(panels) + 1, 4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, task in zip(axes, panels, strict=True):
        metrics = [(key, label) for t, key, label, _ in HEADLINE if t == task and key != "loss"]
        results = report["tasks"][task]["results"]
        width = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            values = [results.get(name, {}).get(key) or 0.0 for key, _ in metrics]
            xs = [j + i * width for j in range(len(metrics))]
            bars = ax.bar(xs, values, width, label=name)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(metrics))])
        ax.set_xticklabels([label.replace(" %", "") for _, label in metrics], fontsize=8)
        ax.set_title(task + (" (lower is better)" if task == "perplexity" else ""))
    axes[0].legend(fontsize=8)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    return path
