"""`danlu chat`: multi-turn terminal chat with streamed answers, or one question with -q.

In the chat: /clear (or clear) forgets the conversation, /exit (or stop) quits, Ctrl-C stops the
answer being written (not the program), Ctrl-D quits.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable

from danlu.infer.chat import CLEAR, QUIT, ChatSession
from danlu.infer.options import (
    add_generation_arguments,
    add_model_arguments,
    gen_params,
    model_args,
)
from danlu.utils.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--question", help="ask one question, print the answer and exit")
    parser.add_argument("--system", help="system prompt for the conversation")
    add_model_arguments(parser)
    add_generation_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from danlu.infer.engine import Engine, EngineConfig

    _ctrl_c_stops_answers()

    params = gen_params(args)
    engine = Engine.load(
        model_args(args),
        template=args.template,
        config=EngineConfig(max_batch_size=1, batch_wait_ms=0),
    )
    try:
        session = ChatSession(engine, params, system=args.system)
        if args.question is not None:
            if not args.question.strip():
                raise UsageError("-q: the question is empty")
            _answer(session, args.question, sys.stdout.write)
            return 0
        return loop(session, input, sys.stdout.write)
    finally:
        engine.close()


def _ctrl_c_stops_answers() -> None:
    """Ctrl-C must reach the chat even when it was started with SIGINT ignored or blocked (a
    background job of a non-interactive shell, a parent that masks it): both are inherited
    across exec, and either would make Ctrl-C do nothing while an answer is written."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def loop(session: ChatSession, read: Callable[[str], str], write: Callable[[str], object]) -> int:
    """The interactive loop; `read`/`write` are injectable so tests can drive it."""
    write(
        f"danlu chat with {session.engine.name}: /clear resets, /exit or stop quits, "
        "Ctrl-C stops an answer.\n"
    )
    while True:
        try:
            text = read("\nUser: ").strip()
        except EOFError:
            write("\n")
            return 0
        except KeyboardInterrupt:
            write("\n(/exit or Ctrl-D to quit)\n")
            continue
        if not text:
            continue
        if text.lower() in QUIT:
            return 0
        if text.lower() in CLEAR:
            session.reset()
            write("(conversation cleared)\n")
            continue
        _answer(session, text, write)


def _answer(session: ChatSession, text: str, write: Callable[[str], object]) -> None:
    write("Assistant: ")
    _flush()
    pieces = session.reply(text)
    try:
        for piece in pieces:
            write(piece)
            _flush()
        write("\n")
    except KeyboardInterrupt:
        pieces.close()
        write(" [stopped]\n")
    except ValueError as exc:  # the conversation no longer fits the context
        write(f"\n[{exc}]\n")
    _flush()


def _flush() -> None:
    sys.stdout.flush()
