"""`danlu export --model PATH [--adapter PATH] --format gguf|hf --quant f16|q8_0|q4_k_m --out DIR`.

  danlu export --adapter runs/demo/final --quant q4_k_m --out exports/tea
  ollama create tea -f exports/tea/Modelfile          # or: llama-cli -m exports/tea/model-q4_k_m.gguf
  danlu export --adapter runs/demo/final --format hf --out exports/tea-hf   # for vLLM, TGI

An adapter is merged into its base first (LoRA, AdaLoRA, IA3; prompt-learning adapters have no
weights to merge and are refused). gguf: llama.cpp's own converter and quantizer, and an Ollama
Modelfile (chat template, stop tokens, sampling defaults) beside the file. hf: merged
safetensors + tokenizer, for vLLM, TGI or any transformers user.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + "\n\n" + (__doc__ or "").split("\n\n", 1)[1]
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="base model: a folder, hub id in the cache, or embedded name")  # fmt: skip
    parser.add_argument("--adapter", help="adapter folder to merge first (e.g. RUN/final)")
    parser.add_argument("--format", default="gguf", choices=["gguf", "hf"], dest="fmt")
    parser.add_argument("--quant", default="f16", choices=["f16", "q8_0", "q4_k_m"],
                        help="GGUF weight type (llama.cpp's quantizer for q8_0 and q4_k_m)")  # fmt: skip
    parser.add_argument("--out", required=True, help="new (or empty) folder for the export")
    parser.add_argument("--template", default="auto",
                        help="chat template for the Modelfile: auto (the tokenizer's), a built-in name or a .jinja file")  # fmt: skip
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model repository's own Python code (off by default)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from danlu.methods.export import export_model

    done = export_model(args.model, args.out, adapter=args.adapter, fmt=args.fmt,
                        quant=args.quant, template=args.template, allow_pickle=args.allow_pickle,
                        trust_remote_code=args.trust_remote_code)  # fmt: skip
    print(done.summary())
    return 0
