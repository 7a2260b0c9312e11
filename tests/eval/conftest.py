"""Fixtures for the eval tests: the tiny random LLaMA loaded once, and small benchmark files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """(model, tokenizer) of the tiny model, loaded through danlu's loader, in eval mode."""
    from danlu.config import ModelArgs
    from danlu.models import load_model

    loaded = load_model(ModelArgs(model=str(tiny_model_dir), device="cpu"))
    return loaded.model, loaded.tokenizer


def mmlu_row(q, choices, answer, topic="tea"):
    return {"question": q, "answer_a": choices[0], "answer_b": choices[1], "answer_c": choices[2],
            "answer_d": choices[3], "correct_answer": answer, "topic": topic}  # fmt: skip


def write_jsonl(path: Path, rows) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
