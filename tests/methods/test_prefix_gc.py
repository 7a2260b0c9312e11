"""Prefix tuning + gradient checkpointing: works (same loss and grads), or refuses clearly."""

from __future__ import annotations

import pytest
import torch
from tests.methods.helpers import batch, config, load, logits, prepared, train_steps

from danlu.utils.errors import UsageError


def _loss_and_grads(model, data):
    model.zero_grad()
    loss = model(**data).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("projection", [False, True])
def test_checkpointing_gives_the_same_loss_and_grads(projection, tiny_model_dir, tokenizer):
    model, _ = prepared(tiny_model_dir, "ptuning_v2", prefix_projection=projection)
    data = batch(tokenizer)
    model.train()
    loss0, grads0 = _loss_and_grads(model, data)
    model.activation_checkpointing_enable({"use_reentrant": False})
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    loss1, grads1 = _loss_and_grads(model, data)
    assert loss1 == pytest.approx(loss0, abs=1e-6)
    for name, g in grads0.items():
        torch.testing.assert_close(grads1[name], g, atol=1e-6, rtol=1e-5)


def test_checkpointing_enabled_before_prepare_is_accepted(tiny_model_dir, tokenizer):
    from danlu.methods import prepare

    cfg = config("prefix", gradient_checkpointing=True)
    base = load(tiny_model_dir)
    base.activation_checkpointing_enable({"use_reentrant": False})
    model = prepare(base, cfg)  # plain peft refuses here
    losses = train_steps(model, "prefix", batch(tokenizer), steps=3, lr=5e-2)
    assert losses[-1] < losses[0]


def test_generation_after_training_still_grows_the_cache(tiny_model_dir, tokenizer):
    model, _ = prepared(tiny_model_dir, "prefix")
    data = batch(tokenizer)
    train_steps(model, "prefix", data, steps=1)
    model.eval()
    out = model.generate(input_ids=data["input_ids"][:1], max_new_tokens=4, do_sample=False)
    assert out.shape[1] == data["input_ids"].shape[1] + 4
    # Greedy generation must agree with the full-sequence forward pass.
    full = logits(model, {"input_ids": out[:, :-1], "attention_mask": torch.ones_like(out[:, :-1])})
    assert full[0, -1].argmax().item() == out[0, -1].item()


def test_reentrant_checkpointing_is_refused_with_a_clear_error(tiny_model_dir, tokenizer):
    model, _ = prepared(tiny_model_dir, "prefix")
    model.activation_checkpointing_enable({"use_reentrant": True})
    model.train()
    with pytest.raises(UsageError, match="use_reentrant=False"):
        model(**batch(tokenizer))
