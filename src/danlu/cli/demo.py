"""`danlu demo`: the main job end to end on the embedded default model.

Today: load the default model (converting it once) and stream a reply to a fixed prompt.
Later issues extend it: train a LoRA on examples/data, evaluate before/after, chat with it.
"""

from __future__ import annotations

import argparse
import sys
import time

from danlu.config import ModelArgs
from danlu.infer.generate import stream_chat
from danlu.models import load_model

PROMPT = "In one sentence, what is fine-tuning a language model?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model to run")
    parser.add_argument("--prompt", default=PROMPT, help="the question to ask")
    parser.add_argument("--max-new-tokens", type=int, default=80)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    loaded = load_model(ModelArgs(model=args.model))
    print(f"[demo] loaded {args.model} from {loaded.path} in {time.perf_counter() - t0:.1f}s")
    print(f"[demo] user: {args.prompt}\n[demo] assistant: ", end="", flush=True)
    t1, pieces = time.perf_counter(), 0
    for piece in stream_chat(
        loaded.model,
        loaded.tokenizer,
        [{"role": "user", "content": args.prompt}],
        max_new_tokens=args.max_new_tokens,
    ):
        sys.stdout.write(piece)
        sys.stdout.flush()
        pieces += 1
    print(f"\n[demo] streamed {pieces} pieces in {time.perf_counter() - t1:.1f}s")
    return 0
