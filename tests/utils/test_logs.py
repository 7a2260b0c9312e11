"""A user's log: a training (LoRA, prefix) and a chat print danlu's own lines only, in a real
process with Python's default warning filters (none of pytest's), as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

# What danlu itself prints on stderr in these runs; anything else is noise to fix.
DANLU_LINE = re.compile(
    r"^(memory|data|method|final|resume|vocabulary|packing|distributed|fsdp|launch): "
    r"|^\{'(loss|train_runtime)'"  # Trainer's step and summary lines (our metrics)
)


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # as a user runs it
    return subprocess.run(
        [sys.executable, "-m", "danlu", *argv], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not DANLU_LINE.search(line)]


@pytest.mark.slow  # two real processes (torch import, a 2-step training)
@pytest.mark.parametrize(("method", "packing"), [("lora", "true"), ("prefix", "false")])
def test_training_and_chat_logs_hold_only_danlu_lines(method, packing, tiny_model_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(8))
    )
    out = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_model_dir}\ndata: [{data}]\noutput_dir: {out}\n")
    run = _run("train", str(config), f"method={method}", f"packing={packing}", "max_steps=2", "save_steps=1", "logging_steps=1",
               "report_to=none", "gradient_checkpointing=true", "per_device_train_batch_size=2",
               "data_cache=false")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert _noise(run.stderr) == []
    chat = _run("chat", "--model", str(tiny_model_dir), "--adapter", str(out / "final"),
                "-q", "hi", "--max-new-tokens", "3")  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert _noise(chat.stderr) == []
