"""`danlu data preview CONFIG [k=v ...] [--n N] [--json]`: what training will see, token by token.

Shows N samples of the training split in training order: the rendered text with the trained
tokens highlighted (green on a terminal, `[[...]]` otherwise), token counts, then the report
(kept / truncated / dropped by reason, skipped bad records, realised mix, length percentiles).
`--json` prints one JSON object per sample (text, input_ids, labels: the exact tensors training
gets) and a final {"report": ...} object, for scripts and tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from danlu.cli.common import add_config_arguments, load_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subs = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    preview = subs.add_parser(
        "preview",
        help="render N samples with the trained tokens highlighted, then the data report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(preview)
    preview.add_argument(
        "--n", type=int, default=3, metavar="N", help="samples to show (default 3)"
    )
    preview.add_argument(
        "--json", action="store_true", help="one JSON object per sample, then the report"
    )


def run(args: argparse.Namespace) -> int:
    from danlu.data import build_dataset
    from danlu.models import load_tokenizer

    cfg = load_from_args(args)
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    train, _, report = build_dataset(cfg, tokenizer, keep_source=True, log=_stderr)
    rows = train.select(range(min(max(args.n, 0), len(train))))
    for i, row in enumerate(rows):
        if args.json:
            print(json.dumps(_sample_json(row, tokenizer), ensure_ascii=False))
        else:
            print(_sample_text(i, row, tokenizer, color=sys.stdout.isatty()))
    if args.json:
        print(json.dumps({"report": report}, ensure_ascii=False))
    else:
        print(_report_text(report))
    return 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _parts(row: dict) -> list[tuple[str, list[int], list[int]]]:
    """(label, input_ids, labels) for a plain sample or the two halves of a preference pair."""
    if "input_ids" in row:
        return [("", row["input_ids"], row["labels"])]
    return [
        (side, row[f"{side}_input_ids"], row[f"{side}_labels"]) for side in ("chosen", "rejected")
    ]


def _trained(labels: list[int]) -> int:
    return sum(1 for t in labels if t != -100)


def _sample_json(row: dict, tokenizer: Any) -> dict:
    out: dict[str, Any] = {"source": row["source"]}
    for side, ids, labels in _parts(row):
        pre = f"{side}_" if side else ""
        out[f"{pre}text"] = tokenizer.decode(ids, skip_special_tokens=False)
        out[f"{pre}input_ids"] = ids
        out[f"{pre}labels"] = labels
        out[f"{pre}tokens"] = len(ids)
        out[f"{pre}trained_tokens"] = _trained(labels)
    return out


def _sample_text(i: int, row: dict, tokenizer: Any, color: bool) -> str:
    from danlu.data.preview_render import render_spans

    lines = []
    for side, ids, labels in _parts(row):
        name = f" {side}" if side else ""
        lines.append(f"--- sample {i + 1}{name}  {row['source']}  "
                     f"{len(ids)} tokens, {_trained(labels)} trained ---")  # fmt: skip
        lines.append(render_spans(ids, labels, tokenizer, color))
    return "\n".join(lines) + "\n"


def _report_text(report: dict) -> str:
    lines = ["=== data report ===", report["summary"]]
    for src in report["sources"]:
        detected = " (detected)" if src["detected"] else ""
        skipped = f", skipped {src['skipped']}" if src["skipped"] else ""
        dropped = f", dropped {src['dropped']}" if src["dropped"] else ""
        lines.append(
            f"  {src['path']}: format {src['format']}{detected}, {src['records']} records, "
            f"{src['kept']} kept, {src['used_by_mix']} used{skipped}{dropped}, cache {src['cache']}"
        )
    mix = report["mix"]
    lines.append("mix (train): " + ", ".join(
        f"{path} {n} ({mix['train_fraction'][path]:.1%}, weight {mix['weights'][path]:g})"
        for path, n in mix["train"].items()
    ))  # fmt: skip
    lengths = report["lengths"]
    lines.append("lengths: " + ", ".join(f"{k} {v:g}" for k, v in lengths.items()))
    lines.append(f"tokens: {report['tokens']} total, {report['trained_tokens']} trained")
    return "\n".join(lines)
