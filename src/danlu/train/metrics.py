"""metrics.jsonl, throughput/MFU and loss.png for a run directory (DESIGN §5).

One JSON object per logging step: step, epoch, loss, lr, grad_norm, tokens_per_s (all input
tokens, padding excluded), trained_tokens (label != -100, cumulative), mfu (where the peak is
known) and mem (GiB: CUDA max allocated on GPU, process RSS on CPU).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ThroughputMeter:
    """Tokens per second and MFU between two logging points."""

    flops_per_token: float
    peak_flops: float | None
    clock: Callable[[], float] = time.perf_counter
    tokens: int = 0
    trained_tokens: int = 0
    _window_tokens: int = 0
    _window_start: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._window_start = self.clock()

    _window_trained: int = 0

    def add(self, tokens: int, trained: int) -> None:
        self.tokens += tokens
        self.trained_tokens += trained
        self._window_tokens += tokens
        self._window_trained += trained

    def restart(self) -> None:
        """Start a fresh window (at train begin: model loading is not training time)."""
        self._window_tokens = self._window_trained = 0
        self._window_start = self.clock()

    def window(self) -> dict[str, float | None]:
        """Rates of this device since the previous call; starts a new window.

        tokens_per_s counts every input token (padding excluded), trained_tokens_per_s only those
        with a label; tflops and mfu use the model FLOPs of all input tokens (each is computed).
        """
        now = self.clock()
        elapsed = max(now - self._window_start, 1e-9)
        rate = self._window_tokens / elapsed
        trained_rate = self._window_trained / elapsed
        self._window_tokens = self._window_trained = 0
        self._window_start = now
        achieved = rate * self.flops_per_token
        mfu = achieved / self.peak_flops if self.peak_flops else None
        return {
            "tokens_per_s": round(rate, 2),
            "trained_tokens_per_s": round(trained_rate, 2),
            "tflops": round(achieved / 1e12, 4),
            "mfu": None if mfu is None else round(mfu, 4),
        }


def memory_gib(device_type: str) -> float:
    """Peak accelerator memory (CUDA) or current process RSS (CPU), in GiB."""
    if device_type == "cuda":
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    import psutil

    return round(psutil.Process(os.getpid()).memory_info().rss / 2**30, 3)


class MetricsFile:
    """Append-only metrics.jsonl; each line is flushed so a crash loses at most one line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint so steps never repeat."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8"
        )
        tmp.replace(self.path)


def plot_loss(records: list[dict[str, Any]], png: str | Path) -> Path | None:
    """Draw train (and eval) loss against step into `png`, atomically; None if nothing to plot."""
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for points, label in ((train, "train loss"), (evals, "eval loss")):
        if points:
            ax.plot(
                *zip(*points, strict=True), label=label, marker="." if len(points) < 30 else None
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    png = Path(png)
    tmp = png.with_name(png.stem + ".tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(png)
    return png
