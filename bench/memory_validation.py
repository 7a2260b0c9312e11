"""Check `danlu estimate` against measured memory of real short trainings.

Each grid point runs in its own subprocess: build a LLaMA-architecture model from a config
(the embedded SmolLM2-135M's architecture, randomly initialised — memory does not depend on
the weights' values — or a tiny 4-layer one), apply the method (full / freeze / lora /
prefix) with PEFT, and run a plain torch training loop (AdamW, loss-only outputs as in HF
Trainer, zero_grad(set_to_none=True)) for 2 steps, so the second step's backward runs with
optimizer states allocated. Measured: on CPU the peak RSS above the idle baseline (after the
imports, before the model exists); on CUDA `torch.cuda.max_memory_allocated`.

CPU measurement detail: glibc keeps freed heap memory and raises its mmap threshold
dynamically, so RSS would count allocator slack; the children run with
MALLOC_MMAP_THRESHOLD_=65536 so every tensor is its own mapping and RSS follows live bytes
(as max_memory_allocated does on CUDA). `--default-malloc` measures without it.

    .venv/bin/python bench/memory_validation.py            # the full grid (~10-20 min, 2 cores)
    .venv/bin/python bench/memory_validation.py --quick    # 4 points
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

TINY = {
    "hidden": 256,
    "layers": 4,
    "heads": 4,
    "kv_heads": 2,
    "intermediate": 688,
    "vocab": 49152,
    "tie_embeddings": True,
}


@dataclass(frozen=True)
class Point:
    model: str  # "embedded" (SmolLM2-135M architecture) or "tiny"
    method: str
    dtype: str
    batch: int
    seq: int
    gc: bool = False


GRID = [
    Point("embedded", "full", "fp32", 1, 128),
    Point("embedded", "full", "fp32", 4, 256),
    Point("embedded", "full", "fp32", 2, 512, gc=True),
    Point("embedded", "lora", "fp32", 1, 128),
    Point("embedded", "lora", "fp32", 4, 256),
    Point("embedded", "lora", "fp32", 2, 512),
    Point("embedded", "lora", "fp32", 4, 512, gc=True),
    Point("embedded", "freeze", "fp32", 4, 256),
    Point("embedded", "freeze", "fp32", 2, 512, gc=True),
    Point("embedded", "prefix", "fp32", 2, 256),
    Point("embedded", "lora", "bf16", 4, 256),
    Point("embedded", "full", "bf16", 2, 256),
    Point("tiny", "full", "fp32", 4, 256),
    Point("tiny", "lora", "fp32", 8, 512),
    Point("tiny", "full", "fp32", 8, 512, gc=True),
    Point("tiny", "freeze", "bf16", 4, 512),
]
QUICK = [GRID[0], GRID[3], GRID[12], GRID[13]]
PRE_SEQ_LEN = 32


def arch_for(model: str):
    from danlu.plan.arch import Arch
    from danlu.plan.sources import load_arch

    return load_arch("smollm2-135m-instruct") if model == "embedded" else Arch(name="tiny", **TINY)


def setup_for(p: Point, device: str):
    from danlu.plan.setup import Setup

    return Setup(
        method=p.method,
        weights=p.dtype,
        master_weights=False,
        device=device,
        micro_batch=p.batch,
        seq_len=p.seq,
        grad_ckpt=p.gc,
        lora_rank=8,
        pre_seq_len=PRE_SEQ_LEN,
        freeze_layers=2,
        overhead=0.0,
    )


def estimate_bytes(p: Point, device: str) -> float:
    from danlu.plan.estimate import estimate

    return estimate(arch_for(p.model), setup_for(p, device)).peak


# ----------------------------------------------------------------------------- child side


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _build(p: Point, torch):
    from transformers import LlamaConfig, LlamaForCausalLM

    a = arch_for(p.model)
    cfg = LlamaConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        intermediate_size=a.intermediate,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        tie_word_embeddings=a.tie_embeddings,
        max_position_embeddings=4096,
        use_cache=False,
    )
    dtype = torch.bfloat16 if p.dtype == "bf16" else torch.float32
    return LlamaForCausalLM._from_config(cfg, dtype=dtype)


def _apply_method(model, p: Point):
    import peft

    if p.method == "freeze":
        for param in model.parameters():
            param.requires_grad_(False)
        for layer in model.model.layers[-2:]:
            for param in layer.parameters():
                param.requires_grad_(True)
    elif p.method == "lora":
        cfg = peft.LoraConfig(
            r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"
        )
        model = peft.get_peft_model(model, cfg)
    elif p.method == "prefix":
        cfg = peft.PrefixTuningConfig(num_virtual_tokens=PRE_SEQ_LEN, task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, cfg)
    return model


def child(p: Point, steps: int = 2) -> dict:
    import peft  # noqa: F401  (imported before the baseline: code is not what we measure)
    import torch
    import transformers  # noqa: F401

    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cuda = torch.cuda.is_available()
    base = _rss()
    model = _build(p, torch)
    if p.gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = _apply_method(model, p)
    model.train()
    if cuda:
        model.cuda()
    params = [x for x in model.parameters() if x.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(
        0, arch_for(p.model).vocab, (p.batch, p.seq), device="cuda" if cuda else "cpu"
    )
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = model(
            input_ids=ids, labels=ids, use_cache=False
        ).loss  # outputs dropped, as in Trainer
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    measured = torch.cuda.max_memory_allocated() if cuda else _peak_rss() - base
    return {
        "measured": measured,
        "device": "cuda" if cuda else "cpu",
        "seconds": time.perf_counter() - t0,
        "trainable": sum(x.numel() for x in params),
    }


# ----------------------------------------------------------------------------- parent side


def run_point(p: Point, default_malloc: bool) -> dict:
    env = dict(os.environ)
    if not default_malloc:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(asdict(p))],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def label(p: Point) -> str:
    return (
        f"{p.model:8} {p.method:6} {p.dtype:4} b{p.batch:<2} s{p.seq:<4} {'gc' if p.gc else '--'}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="4 points instead of the grid")
    ap.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's mmap threshold alone"
    )
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Point(**json.loads(args.child)))))
        return 0
    rows, worst = [], 0.0
    print(
        f"{'model    method dtyp batch seq  gc':40} {'estimate':>9} {'measured':>9} {'error':>7}  s"
    )
    for p in QUICK if args.quick else GRID:
        r = run_point(p, args.default_malloc)
        if "error" in r:
            print(f"{label(p):40} failed: {r['error']}")
            continue
        est = estimate_bytes(p, r["device"])
        err = est / r["measured"] - 1
        worst = max(worst, abs(err))
        rows.append({**asdict(p), **r, "estimate": est, "error": err})
        print(
            f"{label(p):40} {est / 2**20:8.0f}M {r['measured'] / 2**20:8.0f}M {err:+7.1%} {r['seconds']:4.0f}",
            flush=True,
        )
    print(f"worst |error|: {worst:.1%} over {len(rows)} rows (MiB; estimate/measured - 1)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
