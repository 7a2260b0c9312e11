"""Perplexity = exp(mean masked token loss) of a direct forward pass, with training's loss mask."""

from __future__ import annotations

import math

import pytest

from danlu.config.sections import DataArgs, DataSource
from danlu.eval.perplexity import encode_for_loss, masked_loss
from danlu.eval.samples import read_conversations

from .conftest import write_jsonl

CHAT = [
    {"instruction": "Who are you?", "output": "I am Danlu Assistant.", "system": "Be brief."},
    {"instruction": "泡绿茶用多少度的水？", "output": "80 °C 左右。",
     "history": [["你好", "你好！有什么可以帮你？"]]},
    {"instruction": "Say a long thing", "input": "about tea", "output": "Tea " * 40},
]  # fmt: skip


def direct_loss(model, rows):
    """Sum of -log p over tokens with label != -100 (labels shifted), one unpadded pass per row."""
    import torch

    total, count = 0.0, 0
    for r in rows:
        ids = torch.tensor([r["input_ids"]])
        labels = torch.tensor(r["labels"][1:])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].double()
        total += float(
            torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
        )
        count += int((labels != -100).sum())
    return total, count


def conversations(tmp_path, rows, fmt="auto"):
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    convs, _ = read_conversations([DataSource(str(path), format=fmt)], "error", None)
    return convs


def test_chat_perplexity_equals_direct_masked_loss(tiny, tmp_path):
    model, tok = tiny
    enc = encode_for_loss(conversations(tmp_path, CHAT), tok, DataArgs())
    assert len(enc.rows) == 3
    trained = sum(sum(1 for t in r["labels"] if t != -100) for r in enc.rows)
    assert trained < sum(len(r["input_ids"]) for r in enc.rows) / 2  # the mask is really applied
    stats = masked_loss(model, enc.rows, tok.pad_token_id, batch_size=2)
    total, count = direct_loss(model, enc.rows)
    assert stats.tokens == count == trained  # no trained token sits at position 0 in chat data
    assert stats.loss == pytest.approx(total / count, rel=1e-5)
    assert stats.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


def test_per_sample_loss_equals_transformers_loss(tiny, tmp_path):
    import torch

    model, tok = tiny
    enc = encode_for_loss(conversations(tmp_path, CHAT), tok, DataArgs())
    stats = masked_loss(model, enc.rows, tok.pad_token_id, batch_size=3)
    for r, (nll, n) in zip(enc.rows, stats.per_sample, strict=True):
        with torch.no_grad():
            hf = model(
                input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]])
            ).loss
        assert nll / n == pytest.approx(float(hf), rel=1e-5)


def test_text_records_score_every_token(tiny, tmp_path):
    model, tok = tiny
    texts = [{"text": "Green tea likes cooler water."}, {"text": "普洱茶可以久泡。" * 3}]
    enc = encode_for_loss(conversations(tmp_path, texts), tok, DataArgs())
    assert all(r["labels"] == r["input_ids"] for r in enc.rows)
    stats = masked_loss(model, enc.rows, tok.pad_token_id, batch_size=2)
    total, count = direct_loss(model, enc.rows)
    assert count == sum(len(r["input_ids"]) - 1 for r in enc.rows)
    assert stats.tokens == count and stats.loss == pytest.approx(total / count, rel=1e-5)


def test_truncation_follows_the_training_rules_and_is_counted(tiny, tmp_path):
    _, tok = tiny
    convs = conversations(tmp_path, [CHAT[0], CHAT[2]])
    enc = encode_for_loss(convs, tok, DataArgs(cutoff_len=40, max_target_len=4))
    assert enc.truncated == 2 and len(enc.rows) == 2 and not enc.dropped
    assert all(len(r["input_ids"]) <= 40 for r in enc.rows)
    assert all(sum(1 for t in r["labels"] if t != -100) == 4 for r in enc.rows)


def test_masked_loss_restores_training_mode(tiny, tmp_path):
    model, tok = tiny
    enc = encode_for_loss(conversations(tmp_path, CHAT[:1]), tok, DataArgs())
    model.train()
    try:
        stats = masked_loss(model, enc.rows, tok.pad_token_id)
        assert model.training and stats.tokens > 0
    finally:
        model.eval()
    assert not model.training
