"""Command-line options shared by `danlu chat` and `danlu serve`: which model, where, and how to
generate. One definition, so both commands spell and check every flag the same way."""

from __future__ import annotations

import argparse
import os
import re

from danlu.config import ModelArgs
from danlu.infer.params import GenParams, ParamError
from danlu.utils.errors import UsageError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="HF folder, .gguf file, hub id (online) or embedded name; a run's final/ "
        "folder for a fully fine-tuned or merged model (default: %(default)s)",
    )
    g.add_argument(
        "--adapter",
        help="PEFT adapter folder (a run's final/): LoRA, QLoRA, prefix/"
        "P-Tuning v2, prompt, P-Tuning, IA3, AdaLoRA; loaded on top of --model",
    )
    g.add_argument(
        "--template",
        default="auto",
        help="chat template: auto (the one the run trained with, else the tokenizer's), "
        "a built-in name (chatml, qwen, llama3, ...) or a .jinja file",
    )
    g.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weight dtype (default: bfloat16 on GPUs that support it, else float32)",
    )
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    g.add_argument(
        "--devices",
        help="GPUs to use, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES); with "
        "more than one the model is spread over them (device_map auto)",
    )
    g.add_argument("--device-map", help="transformers device_map, e.g. auto")
    g.add_argument(
        "--quantization-bit", type=int, choices=[4, 8], help="load the base model in 4 or 8 bits"
    )
    g.add_argument(
        "--trust-remote-code", action="store_true", help="run the model repository's code"
    )
    g.add_argument("--allow-pickle", action="store_true", help="allow .bin/.pt (pickle) weights")
    g.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: the usable cores; for serve, all but one)",
    )


def add_generation_arguments(parser: argparse.ArgumentParser, max_new_tokens: int = 512) -> None:
    g = parser.add_argument_group("generation")
    g.add_argument(
        "--max-new-tokens",
        type=int,
        default=max_new_tokens,
        help="tokens per answer (default: %(default)s)",
    )
    g.add_argument(
        "--temperature", type=float, default=0.7, help="0 = greedy (default: %(default)s)"
    )
    g.add_argument(
        "--top-p", type=float, default=0.9, help="nucleus sampling mass (default: %(default)s)"
    )
    g.add_argument(
        "--top-k", type=int, default=0, help="sample among the k most likely tokens; 0 = off"
    )
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats")
    g.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop when the answer contains TEXT (repeatable; TEXT is not shown)",
    )
    g.add_argument("--seed", type=int, help="seed for reproducible sampling")
    g.add_argument(
        "--num-beams",
        type=int,
        default=1,
        help="beam search width (> 1 disables sampling and streaming)",
    )
    g.add_argument(
        "--do-sample",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sample (default: when temperature > 0) or decode greedily",
    )


def serving_threads(requested: int, backend: str = "native") -> int:
    """Compute threads for a server: for torch all usable cores but one, which the HTTP side
    needs; for llama.cpp all of them.

    Measured on 2 cores with 16 streaming clients: 60 tok/s with 1 torch thread, 9 tok/s with
    2 -- every parallel op waited for a pool thread that the event loop had displaced. llama.cpp
    runs a whole decode step in C with the GIL released: 1 / 4 / 16 clients got 32.9 / 39.2 /
    36.6 tok/s with 1 thread and 56.0 / 71.4 / 78.0 with 2.
    """
    from danlu.utils.system import available_cpus

    if requested > 0:
        return requested
    return available_cpus() if backend == "llamacpp" else max(1, available_cpus() - 1)


def model_args(args: argparse.Namespace, threads: int | None = None) -> ModelArgs:
    """ModelArgs from the flags; --devices takes effect here, before CUDA starts."""
    device_map = args.device_map
    if args.devices:
        count = use_devices(args.devices)
        if count > 1 and not device_map:
            device_map = "auto"
    return ModelArgs(
        model=args.model,
        adapter=args.adapter,
        model_dtype=args.dtype,
        device=args.device,
        device_map=device_map,
        quantization_bit=args.quantization_bit,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        threads=args.threads if threads is None else threads,
    )


def use_devices(spec: str) -> int:
    """Restrict this process to GPUs `spec` ("0,1"); returns how many. Must run before CUDA
    initialises (torch reads CUDA_VISIBLE_DEVICES once, at its first CUDA call)."""
    if not re.fullmatch(r"\d+(,\d+)*", spec.replace(" ", "")):
        raise UsageError(f"--devices '{spec}': expected GPU indices like 0 or 0,1")
    os.environ["CUDA_VISIBLE_DEVICES"] = spec.replace(" ", "")
    return len(spec.split(","))


def gen_params(args: argparse.Namespace, **overrides: object) -> GenParams:
    """GenParams from the flags; a bad value is a one-line usage error naming the flag."""
    values = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "repetition_penalty": args.repetition_penalty,
        "stop": tuple(args.stop),
        "seed": args.seed,
        "num_beams": args.num_beams,
        "do_sample": args.do_sample,
        **overrides,
    }
    if args.num_beams > 1 and args.do_sample is None:
        values["do_sample"] = False
    try:
        params = GenParams(**values)  # type: ignore[arg-type]
    except ParamError as exc:
        flag = "--" + exc.param.replace("_", "-")
        raise UsageError(f"{flag}: {exc}") from None
    if params.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens: must be at least 1, got {params.max_new_tokens}")
    return params
