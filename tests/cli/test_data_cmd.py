"""`danlu data preview`: plain text with [[trained]] spans, --json tensors, errors as exit 2."""

from __future__ import annotations

import json

import pytest

from danlu.cli import main
from danlu.data import cache


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "cache_root", lambda: tmp_path / "cache")


@pytest.fixture
def config(tmp_path, smollm_dir):
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"instruction": "你是谁？", "output": "我是丹炉助手。"}, ensure_ascii=False)
        + "\n"
        + json.dumps({"instruction": "hi", "output": "", "input": "x"})
        + "\n",
        encoding="utf-8",
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {smollm_dir}\ndata:\n  - path: {data}\npreprocessing_num_workers: 1\n")
    return cfg, data


def test_preview_plain_marks_the_answer(config, capsys):
    cfg, data = config
    assert main(["data", "preview", str(cfg), "on_bad_record=skip", "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert f"--- sample 1  {data}:1  " in out
    assert (
        "<|im_start|>user\n你是谁？<|im_end|>\n<|im_start|>assistant\n[[我是丹炉助手。<|im_end|>]]"
        in out
    )
    assert (
        "1 kept, 0 truncated, 0 dropped, 1 bad records skipped (empty assistant content: 1)" in out
    )
    assert "lengths: min " in out and "mix (train): " in out


def test_preview_json_gives_exact_tensors(config, capsys, tokenizer):
    cfg, data = config
    assert main(["data", "preview", str(cfg), "on_bad_record=skip", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    sample, report = lines[0], lines[-1]["report"]
    assert len(lines) == 2 and sample["source"] == f"{data}:1"
    answer = tokenizer("我是丹炉助手。<|im_end|>", add_special_tokens=False)["input_ids"]
    trained = [t for t in sample["labels"] if t != -100]
    assert trained == answer and sample["trained_tokens"] == len(answer)
    assert sample["text"] == tokenizer.decode(sample["input_ids"], skip_special_tokens=False)
    assert report["skipped"] == {"empty assistant content": 1} and report["kept"] == 1


def test_preview_bad_record_exits_2_naming_the_line(config, capsys):
    cfg, data = config
    assert main(["data", "preview", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"danlu: error: {data}:2: empty assistant content (field 'output')"
