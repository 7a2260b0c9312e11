"""`danlu train CONFIG [k=v ...]`: one run, laid out as DESIGN §5, resumable with `auto`."""

from __future__ import annotations

import argparse
import logging
import sys

from danlu.cli.common import add_config_arguments, load_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or step lines")


def run(args: argparse.Namespace) -> int:
    from danlu.train.engine import train

    cfg = load_from_args(args)
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    result = train(cfg, log=(lambda _: None) if args.quiet else _stderr)
    print(result.final_dir)
    return 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
