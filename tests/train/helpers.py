"""Pieces shared by the training tests."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path


def kill_script(model_dir: Path, data: Path, out: Path, kill_at: int, *extra: str) -> str:
    """Run `danlu train`, SIGKILLing itself inside the save of step `kill_at` (files staged,
    not yet renamed): the worst moment for a crash. `extra` are more key=value overrides."""
    overrides = [
        f"model={model_dir}", f"data=[{data}]", f"output_dir={out}", "method=lora", "lora_rank=4",
        "max_steps=8", "save_steps=2", "logging_steps=1", "per_device_train_batch_size=4",
        "learning_rate=1e-2", "threads=1", "report_to=none", "cutoff_len=64", "data_cache=false",
        *extra,
    ]  # fmt: skip
    return textwrap.dedent(f"""
        import os, signal, sys
        import danlu.train.trainer as T
        real = T.publish
        def publish(staged, dest):
            if dest.name == "step-{kill_at}":
                os.kill(os.getpid(), signal.SIGKILL)
            return real(staged, dest)
        T.publish = publish
        from danlu.cli import main
        sys.exit(main(["train", "{out}.yaml", *{overrides!r}, "--quiet"]))
    """)


def stage_config(model_dir: Path, data: Path, out: Path, stage: str, *extra: str):
    """A short LoRA run of `stage` on the tiny model: 4 steps, a save every 2, batch 4."""
    from danlu.config import load_config

    return load_config(None, [
        f"model={model_dir}", f"data=[{data}]", f"output_dir={out}", f"stage={stage}",
        "method=lora", "lora_rank=4", "max_steps=4", "save_steps=2", "logging_steps=1",
        "per_device_train_batch_size=4", "learning_rate=1e-2", "threads=1", "report_to=none",
        "cutoff_len=64", "data_cache=false", "lr_scheduler_type=constant", *extra,
    ])  # fmt: skip


def metrics_of(run: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def write_pairs(path: Path, n: int) -> Path:
    """n arithmetic preference pairs (a right, short answer over a wrong, hedging one)."""
    rows = [{"instruction": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.",
             "rejected": f"Maybe {2 * i + 1}, or {i}; I am not sure."} for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
