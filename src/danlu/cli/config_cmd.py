"""`danlu config check CONFIG [k=v ...]` and `danlu config keys [KEY ...]`."""

from __future__ import annotations

import argparse

from danlu.cli.common import add_config_arguments, keys_help, load_from_args
from danlu.config import dump_config
from danlu.config.schema import key_index, unknown_key_message
from danlu.utils.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subs = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = subs.add_parser(
        "check",
        help="validate CONFIG + overrides and print the result",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(check)
    keys = subs.add_parser("keys", help="document config keys (all, or the ones named)")
    keys.add_argument("keys", nargs="*", metavar="KEY")


def run(args: argparse.Namespace) -> int:
    if args.action == "check":
        print(dump_config(load_from_args(args)), end="")
        return 0
    valid = key_index()
    for key in args.keys:
        if key not in valid:
            raise UsageError(unknown_key_message(key, key, list(valid)))
    print(keys_help(set(args.keys) if args.keys else None))
    return 0
