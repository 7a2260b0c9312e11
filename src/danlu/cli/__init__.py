"""`danlu` command line: a table of subcommands -> functions. No logic of its own lives here.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`. Errors derived
from DanluError print one line and exit with their code (2 bad input, 1 runtime failure).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from danlu import __version__
from danlu.utils.errors import DanluError
from danlu.utils.logs import quiet_libraries

# name -> (module under danlu.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "env": ("env", "hardware and versions report (GPUs, CUDA, topology, RAM)"),
    "config": ("config_cmd", "check a config (and overrides) and print it resolved; list keys"),
    "data": (
        "data_cmd",
        "preview the tokenised data: trained spans, token counts, the data report",
    ),
    "train": (
        "train",
        "fine-tune: stage pt|sft, any method; resumable; writes OUTPUT_DIR (DESIGN §5)",
    ),
    "merge": ("merge", "merge a LoRA adapter into its base model and save full HF weights"),
    "eval": (
        "eval_cmd",
        "evaluate models: BLEU/ROUGE on generations, multiple choice, perplexity; compare",
    ),
    "estimate": ("estimate", "per-device memory breakdown of a training or inference setup"),
    "plan": ("plan_cmd", "the fastest configuration that fits your GPUs, and how to launch it"),
    "demo": ("demo", "run the main job end to end on the embedded default model"),
    "chat": (
        "chat",
        "multi-turn terminal chat with a model or a run (streaming; -q for one question)",
    ),
    "serve": ("serve", "OpenAI-compatible API server with a web chat page (127.0.0.1 by default)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="danlu",
        description="丹炉 danlu: fine-tune, evaluate and serve LLMs. "
        "Every command that takes CONFIG also takes key=value overrides.",
    )
    parser.add_argument("--version", action="version", version=f"danlu {__version__}")
    # `deepspeed --module danlu train ...` runs `python -m danlu --local_rank=N train ...`; the
    # rank comes from LOCAL_RANK in the environment, so the flag is accepted and ignored.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"danlu.cli.{module}")
        sub = subs.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(sub)
        sub.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    quiet_libraries()
    args = _parse(build_parser(), argv)
    try:
        return int(args._run(args) or 0)
    except DanluError as e:
        print(f"danlu: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("danlu: interrupted", file=sys.stderr)
        return 130


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Like parse_args, but `key=value` overrides may also come after options
    (`danlu train cfg.yaml --nproc 2 max_steps=5`): argparse stops a positional list at a flag."""
    args, extra = parser.parse_known_args(argv)
    late = [x for x in extra if "=" in x and not x.startswith("-")]
    if late and hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *late]
        extra = [x for x in extra if x not in late]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


if __name__ == "__main__":
    sys.exit(main())
