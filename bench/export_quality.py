"""What `danlu export --format gguf` keeps of a model: greedy parity with transformers, and
perplexity per quantisation, SmolLM2-135M-Instruct on the CPU.

    python bench/export_quality.py [--model smollm2-135m-instruct] [--records 40] [--window 512]

Exports the model (through `danlu export`, each in its own folder) as f16, q8_0 and q4_k_m,
then:
  - greedy parity: 6 chat prompts (3 English, 3 Chinese), 48 new tokens each, decoded greedily
    by llama.cpp (llama-cpp-python) from the f16 GGUF and by transformers from the float32 HF
    model, on the same prompt token ids; printed: how many continuations are identical, and
    for the others the first token where they part;
  - perplexity on held-out text: the first --records texts of ../shared/data/c4_demo.jsonl,
    concatenated and cut into --window-token windows, scored by transformers (float32) and by
    llama.cpp on each GGUF (every token of a window after its first is predicted);
  - file sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
C4 = ROOT.parent / "shared" / "data" / "c4_demo.jsonl"
PROMPTS = ["How should I brew green tea?", "Write a haiku about autumn.",
           "What is the capital of France?", "绿茶应该用多少度的水？", "请用一句话介绍长城。",
           "什么是机器学习？"]  # fmt: skip


def export_all(model: str, work: Path) -> dict[str, Path]:
    from danlu.methods.export import export_model

    out = {}
    for quant in ("f16", "q8_0", "q4_k_m"):
        dest = work / quant
        if not (dest / f"model-{quant}.gguf").is_file():
            start = time.perf_counter()
            export_model(model, dest, quant=quant)
            print(f"exported {quant} in {time.perf_counter() - start:.1f} s")
        out[quant] = dest / f"model-{quant}.gguf"
    return out


def windows(tok, records: int, window: int) -> list[list[int]]:
    texts = [json.loads(x)["text"] for x in C4.read_text(encoding="utf-8").splitlines()[:records]]
    ids = tok("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    return [ids[i : i + window] for i in range(0, len(ids) - window + 1, window)]


def nll_hf(model, chunks: list[list[int]]) -> tuple[float, int]:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for ids in chunks:
            logits = model(torch.tensor([ids])).logits[0, :-1].float()
            target = torch.tensor(ids[1:])
            total += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
            count += len(ids) - 1
    return total, count


def nll_gguf(path: Path, chunks: list[list[int]], window: int) -> tuple[float, int]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=window, n_batch=window, logits_all=True,
                verbose=False)  # fmt: skip
    total, count = 0.0, 0
    try:
        for ids in chunks:
            llm.reset()
            llm.eval(ids)
            logits = np.array(llm.scores[: len(ids) - 1], dtype=np.float64)
            peak = logits.max(-1, keepdims=True)
            logz = peak[:, 0] + np.log(np.exp(logits - peak).sum(-1))
            total += float((logz - logits[np.arange(len(ids) - 1), ids[1:]]).sum())
            count += len(ids) - 1
    finally:
        llm.close()
    return total, count


def greedy_hf(model, prompt: list[int], n: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0)  # fmt: skip
    return out[0, len(prompt) :].tolist()


def greedy_gguf(llm, prompt: list[int], n: int) -> list[int]:
    llm.reset()
    out = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        out.append(int(token))
        if len(out) == n:
            break
    return out


def parity(model, tok, f16: Path, n: int) -> None:
    from llama_cpp import Llama

    llm = Llama(model_path=str(f16), n_ctx=512, verbose=False)
    same = 0
    try:
        for text in PROMPTS:
            text_prompt = tok.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
            prompt = tok(text_prompt, add_special_tokens=False)["input_ids"]
            a, b = greedy_hf(model, prompt, n), greedy_gguf(llm, prompt, n)
            if a == b:
                same += 1
                continue
            first = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            print(
                f"  parted at token {first}: {text!r}\n    hf:   {tok.decode(a)!r}\n    gguf: {tok.decode(b)!r}"
            )
    finally:
        llm.close()
    print(
        f"greedy parity (f16 GGUF vs transformers fp32, {n} tokens): {same}/{len(PROMPTS)} identical"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--records", type=int, default=40)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/danlu-bench-export"))
    args = p.parse_args()
    if not C4.is_file():
        sys.exit(f"needs {C4}")
    import torch
    from transformers import AutoModelForCausalLM

    from danlu.models import load_tokenizer, resolve_model

    files = export_all(args.model, args.workdir)
    folder = resolve_model(args.model)
    tok = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    parity(model, tok, files["f16"], args.new_tokens)
    chunks = windows(tok, args.records, args.window)
    rows = [("transformers fp32", *nll_hf(model, chunks), None)]
    rows += [
        (f"GGUF {q}", *nll_gguf(f, chunks, args.window), f.stat().st_size) for q, f in files.items()
    ]
    print(
        f"\nperplexity on {len(chunks)} windows of {args.window} tokens of c4_demo "
        f"({rows[0][2]} predicted tokens):"
    )
    base = math.exp(rows[1][1] / rows[1][2])
    print(f"{'weights':<20} {'perplexity':>10} {'vs f16':>8} {'size MiB':>9}")
    for name, total, count, size in rows:
        ppl = math.exp(total / count)
        print(
            f"{name:<20} {ppl:>10.3f} {ppl / base - 1:>+8.2%} {size / 2**20 if size else float('nan'):>9.1f}"
        )


if __name__ == "__main__":
    main()
