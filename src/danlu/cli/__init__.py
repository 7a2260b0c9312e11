"""`danlu` command line: a table of subcommands -> functions. No logic of its own lives here.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`. Errors derived
from DanluError print one line and exit with their code (2 bad input, 1 runtime failure).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from danlu import __version__
from danlu.utils.errors import DanluError, from_environment, record_for_launcher
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
        "fine-tune: stage pt|sft|rm|dpo|kto|grpo, any method; resumable; writes OUTPUT_DIR (DESIGN §5)",
    ),
    "merge": ("merge", "merge a LoRA adapter into its base model and save full HF weights"),
    "export": (
        "export",
        "a model (+ adapter, merged) as GGUF for llama.cpp / Ollama, or merged HF",
    ),
    "eval": (
        "eval_cmd",
        "evaluate models: BLEU/ROUGE on generations, multiple choice, perplexity, preference; compare",
    ),
    "estimate": ("estimate", "per-device memory breakdown of a training or inference setup"),
    "plan": ("plan_cmd", "the fastest configuration that fits your GPUs, and how to launch it"),
    "demo": ("demo", "run the main job end to end on the embedded default model"),
    "chat": (
        "chat",
        "multi-turn terminal chat with a model or a run (streaming; -q for one question)",
    ),
    "serve": ("serve", "OpenAI-compatible API server with a web chat page (127.0.0.1 by default)"),
    "rag": ("rag", "knowledge base: index documents, ask with cited passages (hybrid retrieval)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in danlu's one-line form (argparse prints the usage and then
    `prog: error: ...`; the usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"danlu: error: {self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="danlu",
        description="丹炉 danlu: fine-tune, evaluate and serve LLMs. "
        "Every command that takes CONFIG also takes key=value overrides.",
    )
    parser.add_argument("--version", action="version", version=f"danlu {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback behind an error line too (also: DANLU_DEBUG=1)",
    )
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
    """The one error boundary: a DanluError, or an OSError from the user's files or machine,
    ends as one `danlu: error:` line (the last one printed) and exit code 2 or 1; anything else
    is a bug and keeps its traceback. `--debug` / DANLU_DEBUG=1 shows tracebacks for all."""
    quiet_libraries()
    args = _parse(build_parser(), argv)
    debug = args.debug or os.environ.get("DANLU_DEBUG", "") not in ("", "0")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("danlu: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        error = exc if isinstance(exc, DanluError) else from_environment(exc)
        if error is None:
            raise
        if debug:
            traceback.print_exc()
        return _report(error)


def _report(error: DanluError) -> int:
    sys.stdout.flush()  # the error must come after everything else the command printed
    if not record_for_launcher(error):  # a rank under danlu's launcher: the launcher prints it
        print(f"danlu: error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
    return error.exit_code


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
