"""A pair's shared prompt computed once (models/shared_prefix.py): the exact layout of a small
batch, and the same log-probabilities and gradients as scoring each sequence in its own row --
with padding, prompts cut differently on each side, and one side a prefix of the other; models
that cannot take the layout are scored per sequence."""

from __future__ import annotations

import logging

import pytest
import torch

from danlu.models.logps import answer_logps_of
from danlu.models.shared_prefix import _FLAG, pair_layout, pair_logps_of


def _batch():
    """Two pairs: pair 0 shares 5 tokens (its sides differ at 5), pair 1 shares 3, padded."""
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (4, 12))
    ids[2, :5] = ids[0, :5]
    ids[2, 5] = ids[0, 5] + 1
    ids[3, :3] = ids[1, :3]
    ids[3, 3] = ids[1, 3] + 1
    mask = torch.tensor([[1] * 12, [1] * 8 + [0] * 4, [1] * 10 + [0] * 2, [1] * 6 + [0] * 6])
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100
    return {"input_ids": ids, "attention_mask": mask}, labels


def test_layout_of_two_pairs():
    inputs, labels = _batch()
    lay = pair_layout(inputs["input_ids"], inputs["attention_mask"], labels)
    ids = inputs["input_ids"]
    # pair 0: 5 shared + 7 chosen + 5 rejected = 17; pair 1: 3 + 5 + 3 = 11, padded to 17
    assert lay.inputs["input_ids"].shape == (2, 17)
    assert lay.inputs["input_ids"][0].tolist() == [*ids[0].tolist(), *ids[2, 5:10].tolist()]
    assert lay.inputs["input_ids"][1, :11].tolist() == [*ids[1, :8].tolist(), *ids[3, 3:6].tolist()]
    assert lay.inputs["position_ids"][0].tolist() == [*range(12), *range(5, 10)]
    assert lay.inputs["position_ids"][1, :11].tolist() == [*range(8), *range(3, 6)]
    mask = lay.inputs["attention_mask"]
    assert mask.shape == (2, 1, 17, 17) and mask.dtype == torch.bool
    # the rejected rest sees the prefix and itself, never the chosen rest
    assert mask[0, 0, 12].tolist() == [True] * 5 + [False] * 7 + [True] + [False] * 4
    assert mask[0, 0, 11].tolist() == [True] * 12 + [False] * 5  # chosen: plain causal
    assert mask[1, 0, 13].tolist() == [True] * 11 + [False] * 2 + [True] + [False] * 3  # + itself
    # scored: chosen tokens 4..11 (from positions 3..10), rejected 4..9: 4 from the shared
    # prefix's 3, 5 from prefix 4, then 6..9 from the rejected rest at 12..15
    kept = lay.keep[0].nonzero().squeeze(-1).tolist()
    assert kept == [3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15]
    assert lay.owner.tolist() == [0] * 8 + [2] * 6 + [1] * 4 + [3] * 2
    assert lay.targets[8:14].tolist() == ids[2, 4:10].tolist()
    assert lay.index[8:14].tolist() == [0, 1, 8, 9, 10, 11]  # rows among the kept logits


def _lora(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))  # fmt: skip


def _grads(logps, model):
    return torch.autograd.grad(logps.sum(), [p for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("case", ["padded", "cut_differently", "side_is_prefix"])
def test_same_numbers_and_gradients_as_one_row_per_sequence(tiny_model_dir, case):
    model = _lora(tiny_model_dir)
    inputs, labels = _batch()
    if case == "cut_differently":  # truncation cut pair 0's prompt one token more on one side
        inputs["input_ids"][2, 2:] = torch.roll(inputs["input_ids"][2, 2:], 1)
    if case == "side_is_prefix":  # pair 1's rejected is its chosen's first 6 tokens
        inputs["input_ids"][3, :6] = inputs["input_ids"][1, :6]
    labels = torch.where(labels == -100, labels, inputs["input_ids"])
    got, counts, _ = pair_logps_of(model, inputs, labels)
    assert getattr(model, _FLAG) is True
    want, want_counts, _ = answer_logps_of(model, inputs, labels)
    assert counts.tolist() == want_counts.tolist()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(_grads(got, model), _grads(want, model), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_model_that_misreads_the_mask_is_scored_per_sequence(tiny_model_dir, caplog):
    """eager attention adds the mask to the scores (a boolean one is not a mask to it): the
    first pair's check sees different numbers and the model is scored one sequence per row."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    inputs, labels = _batch()
    with caplog.at_level(logging.INFO, logger="danlu.train"):
        got, _, _ = pair_logps_of(model, inputs, labels)
    assert getattr(model, _FLAG) is False
    assert "pairs are scored one sequence per row" in caplog.text
    torch.testing.assert_close(got, answer_logps_of(model, inputs, labels)[0])


def test_sliding_window_shorter_than_the_batch_keeps_rows_apart(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.sliding_window = 8
    inputs, labels = _batch()
    pair_logps_of(model, inputs, labels)
    assert getattr(model, _FLAG, None) is None  # never laid out, so never checked


def test_left_padding_is_scored_as_it_is():
    inputs, labels = _batch()
    mask = inputs["attention_mask"].flip(-1)
    assert pair_layout(inputs["input_ids"], mask, labels) is None
