"""data_report.json (DESIGN §5): what was read, skipped, kept, truncated, dropped, mixed.

Every record is accounted for: for each source, `records` = skipped + dropped + kept, and
kept = used by the mix + `unused_by_mix`. The one-line `summary` is what commands print.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from danlu.data.mix import Mix, source_of


def row_counts(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-row token count and trained-token count, chunk by chunk (bounded memory); pairs
    count their chosen side."""
    import pyarrow.compute as pc

    table = ds.data.table if hasattr(ds.data, "table") else ds.data
    ids_col = "input_ids" if "input_ids" in table.column_names else "chosen_input_ids"
    lab_col = ids_col.replace("input_ids", "labels")
    lengths = pc.list_value_length(table.column(ids_col)).to_numpy(zero_copy_only=False)
    if lab_col not in table.column_names:  # grpo prompts: the model writes what is trained
        return lengths.astype(np.int64), np.zeros(len(lengths), np.int64)
    trained = [_trained(chunk) for chunk in table.column(lab_col).chunks]
    return lengths.astype(np.int64), np.concatenate(trained) if trained else np.zeros(0, np.int64)


def _trained(chunk: Any) -> np.ndarray:
    values = chunk.flatten().to_numpy(zero_copy_only=False)
    offsets = chunk.offsets.to_numpy() - chunk.offsets[0].as_py()
    cum = np.concatenate([[0], np.cumsum(values != -100)])
    return cum[offsets[1:]] - cum[offsets[:-1]]


def percentiles(lengths: np.ndarray) -> dict[str, float]:
    if not len(lengths):
        return {}
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
    return {"min": int(lengths.min()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "max": int(lengths.max()), "mean": round(float(lengths.mean()), 2)}  # fmt: skip


def build_report(
    stage: str, sources: list[dict], m: Mix, counts: list[tuple], weights: list[float]
) -> dict:
    """Assemble the report from per-source stats, the mix and per-row (length, trained) counts."""
    sizes = [len(c[0]) for c in counts]
    lengths = np.concatenate([c[0] for c in counts])
    trained = np.concatenate([c[1] for c in counts])
    for src, used in zip(sources, m.used, strict=True):
        src["used_by_mix"] = used
        src["unused_by_mix"] = src["kept"] - used
    chosen = np.concatenate([m.train, m.eval])
    report = {
        "stage": stage,
        "records": sum(s["records"] for s in sources),
        "skipped": _total(sources, "skipped"),
        "kept": sum(s["kept"] for s in sources),
        "truncated": sum(s["truncated"] for s in sources),
        "dropped": _total(sources, "dropped"),
        "train_samples": len(m.train),
        "eval_samples": len(m.eval),
        "mix": _mix_report(sources, m, sizes, weights),
        "lengths": percentiles(lengths[chosen]),
        "tokens": int(lengths[chosen].sum()),
        "trained_tokens": int(trained[chosen].sum()),
        "sources": sources,
    }
    report["summary"] = summary(report)
    return report


def _total(sources: list[dict], key: str) -> dict[str, int]:
    total: Counter = Counter()
    for s in sources:
        total.update(s[key])
    return dict(sorted(total.items()))


def _mix_report(sources: list[dict], m: Mix, sizes: list[int], weights: list[float]) -> dict:
    train = np.bincount(source_of(m.train, sizes), minlength=len(sizes))
    evals = np.bincount(source_of(m.eval, sizes), minlength=len(sizes))
    n = max(1, int(train.sum()))
    return {
        "weights": {s["path"]: w for s, w in zip(sources, weights, strict=True)},
        "train": {s["path"]: int(c) for s, c in zip(sources, train, strict=True)},
        "eval": {s["path"]: int(c) for s, c in zip(sources, evals, strict=True)},
        "train_fraction": {
            s["path"]: round(int(c) / n, 4) for s, c in zip(sources, train, strict=True)
        },
    }


def summary(report: dict) -> str:
    """`N kept, N truncated, N dropped (reason: n), N bad records skipped (reason: n)`."""

    def reasons(d: dict[str, int]) -> str:
        return f" ({', '.join(f'{k}: {v}' for k, v in d.items())})" if d else ""

    dropped, skipped = report["dropped"], report["skipped"]
    return (
        f"{report['kept']} kept, {report['truncated']} truncated, "
        f"{sum(dropped.values())} dropped{reasons(dropped)}, "
        f"{sum(skipped.values())} bad records skipped{reasons(skipped)}; "
        f"{report['train_samples']} train / {report['eval_samples']} eval"
    )


def save_report(report: dict, output_dir: str | Path) -> Path:
    """Write OUTPUT_DIR/data_report.json atomically."""
    path = Path(output_dir) / "data_report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    tmp.replace(path)
    return path
