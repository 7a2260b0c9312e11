"""`danlu demo`: the main job end to end on the embedded default model, in a few CPU minutes.

1. ask the base model who it is (it says SmolLM, made by Hugging Face);
2. LoRA-fine-tune it on the bundled identity + tea data (examples/demo.yaml);
3. ask the fine-tuned model the same questions: it now answers as 丹炉助手 / Danlu Assistant;
4. evaluate base vs fine-tuned on the held-out identity + tea questions (BLEU-4, ROUGE,
   perplexity), written as a before/after report;
5. serve it on a free local port and ask once more through the official `openai` client.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from danlu.config import ModelArgs, load_config
from danlu.utils.errors import UsageError

QUESTIONS = ["Who are you?", "你是谁？", "How should I brew green tea?"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="demo run config (default: examples/demo.yaml of the danlu checkout)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override demo config keys, e.g. max_steps=10 output_dir=runs/x",
    )
    parser.add_argument("--max-new-tokens", type=int, default=60)


def run(args: argparse.Namespace) -> int:
    from danlu.train.engine import train

    cfg = _fit_to_this_cpu(load_config(_demo_config(args.config), args.overrides), args.overrides)
    say(
        f"model {cfg.model}, method {cfg.method}, {len(cfg.data)} data sources, "
        f"{cfg.max_steps} steps -> {cfg.output_dir}"
    )
    _ask("before fine-tuning", ModelArgs(model=cfg.model), args.max_new_tokens)
    t0 = time.perf_counter()
    result = train(cfg, log=say)
    say(
        f"trained {result.global_step} steps in {time.perf_counter() - t0:.0f}s, "
        f"final loss {result.train_loss:.3f}; metrics in {result.run_dir / 'metrics.jsonl'}"
    )
    tuned = ModelArgs(model=cfg.model, adapter=str(result.final_dir))
    _ask("after fine-tuning", tuned, args.max_new_tokens)
    _report(cfg, result.final_dir, args.max_new_tokens)
    _serve_and_ask(tuned, args.max_new_tokens)
    _ask_with_retrieval(cfg, tuned, args.max_new_tokens)
    return 0


def _ask_with_retrieval(cfg: Any, model_args: ModelArgs, max_new_tokens: int) -> None:
    """The seeds' point: knowledge belongs in an index, not only in the weights. Index our tea
    sheet (examples/docs) and ask the fine-tuned model again, with the passages it cites."""
    from danlu.cli.rag import grounded_answer, index_docs

    docs = _demo_config(None).parent / "docs"
    if not docs.is_dir():
        say("rag: examples/docs not found; skipped")
        return
    # top_k 1: a 135M model answers from one passage; given several, it mixes their numbers
    rag = load_config(None, [f"rag_docs=[{str(docs)!r}]", "top_k=1",
                             f"rag_index={str(Path(cfg.output_dir) / 'rag-index')!r}"])  # fmt: skip
    try:
        report = index_docs(rag, log=lambda _: None)
    except UsageError as exc:  # the rag extra is not installed
        say(f"rag: skipped ({exc})")
        return
    say(f"--- with retrieval: index {rag.rag_index}: {report.summary()} ---")
    question = QUESTIONS[2]
    sys.stdout.write(f"user: {question}\nassistant: ")
    _, passages = grounded_answer(rag, model_args, question, max_new_tokens, write=sys.stdout.write)
    if passages:  # what the index knows, whatever a 135M model makes of it
        text = " ".join(passages[0].text.split())
        say(f"[1] says: {text[:240]}{'...' if len(text) > 240 else ''}")


def _fit_to_this_cpu(cfg: Any, overrides: list[str]) -> Any:
    """The demo config asks for bf16 (faster on CPUs with bf16 instructions); where the CPU has
    none, autocast would emulate it and the demo would take an hour: run it in float32 instead,
    unless the user set bf16 on the command line."""
    from danlu.models import pick_device
    from danlu.utils.envinfo import cpu_bf16

    asked = any(o.split("=", 1)[0].strip() == "bf16" for o in overrides)
    if cfg.bf16 and not asked and pick_device(cfg.device).type == "cpu" and not cpu_bf16():
        say("bf16: off (this CPU has no bfloat16 instructions; float32 is faster here)")
        return cfg.replace(bf16=False)
    return cfg


def _report(cfg: Any, adapter: Path, max_new_tokens: int) -> None:
    """Before/after on data the run never saw: the `*_eval.jsonl` beside each training file."""
    from danlu.eval import compare

    held_out = [
        str(p)
        for src in cfg.data
        if (p := Path(src.path).with_name(Path(src.path).stem + "_eval.jsonl")).is_file()
    ]
    if not held_out:
        say("eval: no held-out files (NAME_eval.jsonl beside the data) found; report skipped")
        return
    out = Path(cfg.output_dir) / "eval"
    say(f"--- before/after on {', '.join(held_out)} -> {out}/report.md ---")
    compare(
        {"fine-tuned": str(adapter)},
        held_out,
        model=cfg.model,
        output_dir=str(out),
        # 16 rows: the 31 held-out questions decode in 2 batches instead of 4
        settings={"eval_max_new_tokens": max_new_tokens, "per_device_eval_batch_size": 16},
        log=print,
        quiet=True,
    )


def _serve_and_ask(model_args: ModelArgs, max_new_tokens: int) -> None:
    """The OpenAI-compatible server, exercised the way users' own clients will."""
    from danlu.infer.launch import start_server

    try:
        from openai import OpenAI
    except ImportError:
        say("serve: skipped (pip install openai to see the server answer through its client)")
        return
    with start_server(model_args) as server:
        say(f"--- danlu serve on {server.url} (OpenAI API at {server.base_url}) ---")
        client = OpenAI(base_url=server.base_url, api_key="demo")
        reply = client.chat.completions.create(
            model=server.engine.name,
            messages=[{"role": "user", "content": QUESTIONS[0]}],
            max_tokens=max_new_tokens,
            temperature=0,
        )
        print(f"openai client: {QUESTIONS[0]}\nserver: {reply.choices[0].message.content}")
        say(
            f"usage: {reply.usage.prompt_tokens} prompt + {reply.usage.completion_tokens} "
            f"completion tokens; server stopped"
        )


def _demo_config(given: str | None) -> Path:
    if given:
        return Path(given)
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = root / "examples" / "demo.yaml"
        if candidate.is_file():
            return candidate
    raise UsageError(
        "demo: examples/demo.yaml not found; run from the danlu checkout or pass --config"
    )


def _ask(title: str, model_args: ModelArgs, max_new_tokens: int) -> None:
    """Each question on its own, greedy, streamed through the engine `danlu chat` uses."""
    from danlu.infer.chat import ChatSession
    from danlu.infer.engine import Engine, EngineConfig
    from danlu.infer.params import GenParams

    config = EngineConfig(max_batch_size=1, batch_wait_ms=0)
    with Engine.load(model_args, config=config) as engine:
        say(f"--- {title} ---")
        chat = ChatSession(engine, GenParams(max_new_tokens=max_new_tokens, temperature=0))
        for question in QUESTIONS:
            chat.reset()
            sys.stdout.write(f"user: {question}\nassistant: ")
            for piece in chat.reply(question):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")


def say(line: str) -> None:
    print(f"[demo] {line}", flush=True)
