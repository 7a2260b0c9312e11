"""Packing: golden packs, position ids and block masks; packed loss == unpacked loss."""

from __future__ import annotations

import pytest

from danlu.data.pack import PackCollator, pack_samples

X = -100
SAMPLES = [([1, 2, 3], [X, 2, 3]), ([4, 5], [4, 5]), ([6, 7, 8, 9], [X, X, 8, 9])]


def test_best_fit_packs_with_restarting_positions_and_no_cross_sample_target():
    packs = pack_samples(SAMPLES, cutoff_len=6)
    assert [p.input_ids for p in packs] == [[1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert [p.position_ids for p in packs] == [[0, 1, 2, 0, 1], [0, 1, 2, 3]]
    # token 4 starts a sample: it must not be learnt from token 3, so its label goes
    assert [p.labels for p in packs] == [[X, 2, 3, X, 5], [X, X, 8, 9]]
    assert [p.lengths for p in packs] == [[3, 2], [4]]


def test_best_fit_picks_the_tightest_pack():
    samples = [([1] * 5, [1] * 5), ([2] * 2, [2] * 2), ([3] * 3, [3] * 3), ([4] * 1, [4] * 1)]
    packs = pack_samples(samples, cutoff_len=6)
    # 5 -> A (room 1); 2 -> B (room 4); 3 -> B (room 1); 1 -> A (tightest of the two rooms of 1)
    assert [p.input_ids for p in packs] == [[1, 1, 1, 1, 1, 4], [2, 2, 3, 3, 3]]


def test_oversized_sample_is_an_error():
    with pytest.raises(ValueError, match="exceeds cutoff_len 2"):
        pack_samples([([1, 2, 3], [1, 2, 3])], cutoff_len=2)


def test_collated_pack_golden_4d_mask():
    import torch

    batch = PackCollator(pad_id=0, mask="4d")(pack_samples(SAMPLES, cutoff_len=6))
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert batch["labels"].tolist() == [[X, 2, 3, X, 5], [X, X, 8, 9, X]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    allowed = (batch["attention_mask"] == 0).int()[:, 0].tolist()
    assert allowed == [
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]],
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 1]],
    ]
    assert batch["attention_mask"].dtype == torch.float32
    assert batch["attention_mask"].min().item() == torch.finfo(torch.float32).min


def test_position_ids_mode_has_no_mask():
    batch = PackCollator(pad_id=0, mask="position_ids", pad_to_multiple_of=8)(
        pack_samples(SAMPLES, 6)
    )
    assert "attention_mask" not in batch and batch["use_cache"] is False
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 0, 1, 2, 3]]


def _token_losses(model, batch):
    """Per-token cross entropy of each trained (shifted) label, in order."""
    import torch

    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels.flatten(), reduction="none"
    )
    return losses[labels.flatten() != X]


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def tiny_model(request, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, attn_implementation=request.param
    ).eval()


@pytest.mark.parametrize("mask", ["4d", "position_ids"])
def test_packed_loss_equals_unpacked(tiny_model, tokenizer, mask):
    import torch

    from danlu.config.sections import DataArgs
    from danlu.data.collate import Collator
    from danlu.data.encode import encode_conversation
    from danlu.data.templates import get_template
    from danlu.data.types import Conversation, Message

    model = tiny_model
    template = get_template("auto", tokenizer)
    turns = [
        ("Hi", "Hello! How can I help?"),
        ("2+2?", "4"),
        ("你好", "你好！我是助手。"),
        ("Bye", "Goodbye."),
    ]
    encoded = [encode_conversation(Conversation([Message("user", q), Message("assistant", a)], "t:1"),
                                   tokenizer, template, DataArgs()) for q, a in turns]  # fmt: skip
    samples = [(e.input_ids, e.labels) for e in encoded]
    unpacked = torch.cat([_token_losses(model, Collator(tokenizer.pad_token_id)([
        {"input_ids": i, "labels": lab}])) for i, lab in samples])  # fmt: skip
    packs = pack_samples(samples, cutoff_len=max(len(i) for i, _ in samples) * 2)
    assert len(packs) < len(samples)
    batch = PackCollator(tokenizer.pad_token_id, mask=mask)(packs)
    packed = _token_losses(model, batch)
    # packs hold the samples' trained tokens in pack order: compare in that order
    by_sample = {tuple(i): _token_losses(model, Collator(tokenizer.pad_token_id)([{"input_ids": i, "labels": lab}]))
                 for i, lab in samples}  # fmt: skip
    expected = torch.cat(
        [
            by_sample[tuple(p.input_ids[s : s + n])]
            for p in packs
            for s, n in zip(_starts(p.lengths), p.lengths, strict=True)
        ]
    )
    assert packed.shape == expected.shape == unpacked.shape
    torch.testing.assert_close(packed, expected, atol=1e-4, rtol=0)
    assert abs(packed.mean().item() - unpacked.mean().item()) < 1e-4


def _starts(lengths):
    out, at = [], 0
    for n in lengths:
        out.append(at)
        at += n
    return out
