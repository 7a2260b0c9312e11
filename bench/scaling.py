"""Data-parallel scaling: tokens/s of `danlu train` with 1, 2, ... processes, same model and data.

    python bench/scaling.py [--nproc 1,2] [--strategy ddp|fsdp|zero2|zero3] [--steps 12]
        [--batch 4] [--cutoff 512] [--model smollm2-135m-instruct]

Weak scaling, as users scale: every process keeps the same micro-batch, so N processes train N
times the tokens per step. Each run is a real `danlu train --nproc N` (torchrun underneath) with
LoRA r=8 on the embedded SmolLM2-135M (or --model), packing and bf16 off so the work per token is
the plain one. Printed per N: the job's tokens/s (summed over ranks, from metrics.jsonl, first
two logging steps dropped as warm-up), tokens/s per process, and the efficiency against the
1-process run measured in the same invocation: tokens/s(N) / (N x tokens/s(1)).

On a CPU machine the processes share the same cores: with 2 cores, 1 process runs 2 threads and
2 processes run 1 thread each, so the total compute is the same and the ideal is 1.0x the
1-process tokens/s, minus what the gradient all-reduce (gloo) costs. On a GPU node each process
owns a GPU; run the same script there, e.g.

    python bench/scaling.py --nproc 1,2,4,8 --strategy ddp --batch 8 --cutoff 1024
    python bench/scaling.py --nproc 1,8 --strategy zero3 --model /models/Qwen2.5-7B

and for several nodes run `danlu train CONFIG --print-launch` for the per-node commands.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "alpaca_zh_demo.json"
STRATEGY = {
    "ddp": [],
    "fsdp": ["distributed=fsdp"],
    "zero2": ["deepspeed=zero2"],
    "zero3": ["deepspeed=zero3"],
}


def data_paths() -> list[str]:
    if SHARED_DATA.is_file():
        return [str(SHARED_DATA)]
    return [str(ROOT / "examples" / "data" / n) for n in ("identity.jsonl", "tea.jsonl")]


def write_config(folder: Path, args: argparse.Namespace) -> Path:
    config = folder / "scaling.yaml"
    data = "".join(f"  - {p}\n" for p in data_paths())
    config.write_text(
        f"model: {args.model}\ndata:\n{data}method: lora\nlora_rank: 8\nlora_alpha: 16\n"
        f"per_device_train_batch_size: {args.batch}\ncutoff_len: {args.cutoff}\n"
        f"max_steps: {args.steps}\nlogging_steps: 1\nsave_steps: 100000\nreport_to: none\n"
        "learning_rate: 2.0e-4\noverwrite_output_dir: true\n"
    )
    return config


def run(config: Path, out: Path, nproc: int, strategy: str) -> dict:
    argv = [sys.executable, "-m", "danlu", "train", str(config), f"output_dir={out}", "--quiet"]
    argv += [*STRATEGY[strategy], "--nproc", str(nproc)]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"nproc={nproc} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in rows if "tokens_per_s" in r][2:] or rows
    return {
        "nproc": nproc,
        "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in steady),
        "per_device": statistics.mean(r["tokens_per_s_per_device"] for r in steady),
        "mem_gib": max(r.get("mem", 0.0) for r in steady),
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nproc", default="1,2", help="comma-separated process counts (1 first)")
    ap.add_argument("--strategy", default="ddp", choices=sorted(STRATEGY))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--cutoff", type=int, default=512)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    counts = [int(n) for n in args.nproc.split(",")]
    print(f"machine: {os.cpu_count()} CPUs; strategy {args.strategy}; data {data_paths()}")
    print(f"micro-batch {args.batch} per process, cutoff {args.cutoff}, {args.steps} steps\n")
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), args)
        results = [run(config, Path(tmp) / f"n{n}", n, args.strategy) for n in counts]
    base = results[0]
    print(f"{'procs':>5} {'tokens/s':>10} {'per proc':>10} {'efficiency':>10} "
          f"{'peak mem/proc':>14} {'wall s':>7}")  # fmt: skip
    for r in results:
        eff = r["tokens_per_s"] / (r["nproc"] / base["nproc"] * base["tokens_per_s"])
        print(f"{r['nproc']:>5} {r['tokens_per_s']:>10.1f} {r['per_device']:>10.1f} "
              f"{eff:>9.2f}x {r['mem_gib']:>11.2f} GiB {r['wall_s']:>7.1f}")  # fmt: skip
    last = results[-1]
    print(f"\nratio tokens/s {last['nproc']} procs / {base['nproc']}: "
          f"{last['tokens_per_s'] / base['tokens_per_s']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
