"""Argument pieces shared by subcommands: CONFIG + key=value overrides, and the key docs."""

from __future__ import annotations

import argparse
import dataclasses

from danlu.config import SECTIONS, Config, load_config
from danlu.config.schema import field_types, type_name
from danlu.utils.docstrings import field_docs


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """CONFIG [key=value ...]; the epilog lists every key with its documentation."""
    parser.add_argument("config", metavar="CONFIG", help="YAML run config (DESIGN §2)")
    parser.add_argument(
        "overrides",
        metavar="key=value",
        nargs="*",
        help="override any config key, e.g. lora_rank=16 max_steps=100",
    )
    parser.epilog = keys_help()


def load_from_args(args: argparse.Namespace) -> Config:
    """The one path every CONFIG-taking command uses: read, override, validate."""
    return load_config(args.config, args.overrides)


def keys_help(only: set[str] | None = None) -> str:
    lines = ["config keys (YAML or key=value):"]
    for name, cls in SECTIONS.items():
        docs, types = field_docs(cls), field_types(cls)
        block = [f for f in dataclasses.fields(cls) if only is None or f.name in only]
        if not block:
            continue
        lines.append(f"  [{name}]")
        for f in block:
            doc = " ".join(docs.get(f.name, "").split())
            lines.append(f"    {f.name} ({type_name(types[f.name])}): {doc}")
    return "\n".join(lines)
