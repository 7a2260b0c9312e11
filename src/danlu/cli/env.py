"""`danlu env`: what this machine has, as a table or JSON."""

from __future__ import annotations

import argparse
import json

from danlu.utils import envinfo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    info = envinfo.collect()
    print(json.dumps(info, indent=2) if args.json else envinfo.render(info))
    return 0
