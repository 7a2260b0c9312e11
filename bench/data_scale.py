"""Data pipeline at scale: peak RSS and records/s on a generated JSONL, against a baseline.

    .venv/bin/python bench/data_scale.py [--records 1000000] [--workers 0]

Generates N short alpaca records (in a temp dir), then runs, each in a fresh subprocess whose
whole process tree's RSS is sampled every 0.1 s:
  danlu     build_dataset (streaming reader -> worker pool -> Arrow cache), default encoder
            (chat template + loss mask + truncation), cold cache, then again warm (cache hit);
  baseline  the naive route: datasets.load_dataset("json") + map(apply_chat_template) with
            the same number of processes (no labels, so it does less work than danlu).
Prints one line per run and the ratios danlu / baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def generate(path: Path, n: int) -> None:
    words = [
        "furnace",
        "elixir",
        "model",
        "data",
        "token",
        "train",
        "answer",
        "question",
        "tea",
        "leaf",
        "water",
        "steep",
    ]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            q = " ".join(words[(i * k) % len(words)] for k in range(1, 8 + i % 9))
            a = " ".join(words[(i + k) % len(words)] for k in range(12 + i % 20))
            f.write(
                json.dumps({"instruction": f"{q}?", "input": "" if i % 3 else "丹炉", "output": a})
                + "\n"
            )


def run_danlu(data: str, workers: int, home: str) -> int:
    os.environ["DANLU_HOME"] = home
    from danlu.config.sections import DataArgs, DataSource
    from danlu.data import build_dataset
    from danlu.models import load_tokenizer

    tok = load_tokenizer(os.environ["BENCH_MODEL_DIR"] and Path(os.environ["BENCH_MODEL_DIR"]))
    args = DataArgs(data=[DataSource(data)], preprocessing_num_workers=workers, cutoff_len=512)
    train, _, _report = build_dataset(args, tok, "sft", 0, log=lambda s: print(s, file=sys.stderr))
    return len(train)


def run_baseline(data: str, workers: int, home: str) -> int:
    import datasets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.environ["BENCH_MODEL_DIR"])

    def encode(rec: dict) -> dict:
        user = f"{rec['instruction']}\n{rec['input']}" if rec["input"] else rec["instruction"]
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}]
        return {"input_ids": tok.apply_chat_template(msgs, tokenize=True, return_dict=False)[:512]}

    ds = datasets.load_dataset("json", data_files=data, split="train", cache_dir=home)
    ds = ds.map(encode, num_proc=workers if workers > 1 else None, remove_columns=ds.column_names)
    return len(ds)


def measure(mode: str, data: str, workers: int, home: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB of the process tree, output) of one subprocess run."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--data",
        data,
        "--workers",
        str(workers),
        "--home",
        home,
    ]
    start = time.perf_counter()
    # Output goes to a file: a pipe nobody drains while we poll fills up (64 KiB of progress
    # bars) and blocks the child forever.
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        root, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)
        log.seek(0)
        out = log.read()
    if proc.returncode:
        raise SystemExit(f"{mode} failed:\n{out}")
    return time.perf_counter() - start, peak / 2**20, out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=0, help="0 = usable cores")
    ap.add_argument(
        "--runs",
        default="danlu,baseline",
        help="which sides to run: danlu (cold + warm), baseline, or both",
    )
    ap.add_argument("--child", choices=["danlu", "baseline"])
    ap.add_argument("--data")
    ap.add_argument("--home")
    a = ap.parse_args()
    if a.child:
        n = (run_danlu if a.child == "danlu" else run_baseline)(a.data, a.workers, a.home)
        print(f"rows={n}")
        return
    from danlu.models import resolve_model
    from danlu.utils.system import available_cpus

    os.environ["BENCH_MODEL_DIR"] = str(resolve_model("smollm2-135m-instruct"))
    workers = a.workers or available_cpus()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        generate(data, a.records)
        mb = data.stat().st_size / 2**20
        print(f"{a.records} records, {mb:.0f} MiB JSONL, {workers} worker(s)")
        results = {}
        for name, mode, home in (("danlu cold", "danlu", f"{tmp}/home"), ("danlu warm", "danlu", f"{tmp}/home"),
                                 ("baseline", "baseline", f"{tmp}/hf")):  # fmt: skip
            if mode not in a.runs.split(","):
                continue
            secs, rss, out = measure(mode, str(data), workers, home)
            results[name] = (secs, rss)
            hit = "  (cache hit)" if "reused from the cache" in out else ""
            print(
                f"{name:11s} {secs:8.1f} s  {a.records / secs:10.0f} records/s  peak RSS {rss:7.0f} MiB{hit}"
            )
        if "danlu cold" not in results or "baseline" not in results:
            return
        (d_s, d_rss), (b_s, b_rss) = results["danlu cold"], results["baseline"]
        print(f"ratio danlu cold / baseline: speed {b_s / d_s:.2f}x, peak RSS {d_rss / b_rss:.2f}x")


if __name__ == "__main__":
    main()
