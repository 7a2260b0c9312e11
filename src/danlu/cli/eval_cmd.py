"""`danlu eval CONFIG [k=v ...] [--quiet]`: evaluate one or several models, write one report.

Tasks (eval_task): generation (BLEU-4, ROUGE-1/2/L against each record's last assistant turn),
multiple_choice (C-Eval/CMMLU CSV or MMLU JSONL, per-subject and overall accuracy), perplexity
(loss-masked as in training), preference (pairwise eval_data: how often the chosen answer wins,
by a reward model's score or a policy's implicit reward against its base). Several eval_models are compared side by side in
eval_output_dir/report.{json,md,png}; the at-a-glance table is printed on stdout. See
docs/eval.md for the exact prompts and metric definitions.
"""

from __future__ import annotations

import argparse
import sys

from danlu.cli.common import add_config_arguments, load_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + "\n\n" + (__doc__ or "").split("\n\n", 1)[1]
    add_config_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")


def run(args: argparse.Namespace) -> int:
    from danlu.eval.report import glance_markdown
    from danlu.eval.runner import evaluate

    cfg = load_from_args(args)
    if args.quiet or not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars, one per model
    report = evaluate(cfg, log=None if args.quiet else _stderr, quiet=args.quiet)
    print(glance_markdown(report))
    print(f"report: {cfg.eval_output_dir}/report.md")
    return 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
