"""`danlu merge --model PATH --adapter PATH --out DIR`: a LoRA folded into full HF weights."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the base model the adapter was trained on")
    parser.add_argument("--adapter", required=True, help="LoRA adapter folder (e.g. RUN/final)")
    parser.add_argument("--out", required=True, help="new folder for the merged model")
    parser.add_argument(
        "--dequantize",
        action="store_true",
        help="allow a quantised base: merge into its float32 dequantised weights",
    )
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights")


def run(args: argparse.Namespace) -> int:
    from danlu.methods.merge import merge_lora

    out = merge_lora(
        args.model,
        args.adapter,
        args.out,
        dequantize=args.dequantize,
        allow_pickle=args.allow_pickle,
    )
    print(out)
    return 0
