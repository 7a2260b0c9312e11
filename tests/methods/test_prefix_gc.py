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


def test_inference_after_training_still_grows_the_cache(tiny_model_dir, tokenizer):
    # Training swaps in FrozenPrefixCache; in eval the prefix must come as a plain cache that
    # decoding appends to (peft's own `generate` is not the check: on transformers >= 5.24 it
    # drops the prefix, which is why danlu's engine builds the cache itself).
    from transformers import DynamicCache

    from danlu.models.compat import cache_keyword

    model, _ = prepared(tiny_model_dir, "prefix")
    data = batch(tokenizer)
    train_steps(model, "prefix", data, steps=1)
    model.eval()
    cache = model.get_prompt(batch_size=1)
    assert type(cache) is DynamicCache
    virtual = cache.get_seq_length()
    ids = data["input_ids"][:1]
    mask = torch.ones(1, virtual + ids.shape[1], dtype=torch.long)
    with torch.no_grad():
        model.get_base_model()(input_ids=ids, attention_mask=mask, use_cache=True,
                               **{cache_keyword(model): cache})  # fmt: skip
    assert cache.get_seq_length() == virtual + ids.shape[1]


def test_reentrant_checkpointing_is_refused_with_a_clear_error(tiny_model_dir, tokenizer):
    model, _ = prepared(tiny_model_dir, "prefix")
    model.activation_checkpointing_enable({"use_reentrant": True})
    model.train()
    with pytest.raises(UsageError, match="use_reentrant=False"):
        model(**batch(tokenizer))


def _prefix_cache(layers=2, prefix=3):
    from transformers import DynamicCache

    from danlu.methods.prefix import _frozen

    torch.manual_seed(0)
    cache = DynamicCache()
    for i in range(layers):
        cache.update(torch.randn(1, 2, prefix, 4), torch.randn(1, 2, prefix, 4), i)
    return _frozen(cache)


@pytest.mark.parametrize(
    "style",
    ["bare", "cache_kwargs_positional", "cache_kwargs=", "kwargs="],
)
def test_frozen_cache_returns_prefix_plus_new_and_keeps_nothing(style):
    # transformers has changed what follows layer_idx (cache_kwargs, then kwargs=): every style
    # must give prefix + new states and leave the prefix as it was (checkpointed layers rerun).
    cache = _prefix_cache()
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    extra = {"cache_position": torch.arange(3, 8)}
    args, kwargs = {
        "bare": ((), {}),
        "cache_kwargs_positional": ((extra,), {}),
        "cache_kwargs=": ((), {"cache_kwargs": extra}),
        "kwargs=": ((), {"kwargs": extra}),
    }[style]
    for _ in range(2):  # a recomputed layer sees exactly what the first pass saw
        keys, values = cache.update(k, v, 1, *args, **kwargs)
        torch.testing.assert_close(keys, torch.cat([before[1][0], k], dim=-2))
        torch.testing.assert_close(values, torch.cat([before[1][1], v], dim=-2))
    for layer, (k0, v0) in zip(cache.layers, before, strict=True):
        torch.testing.assert_close(layer.keys, k0)
        torch.testing.assert_close(layer.values, v0)
    assert cache.get_seq_length(1) == 3


def test_frozen_cache_casts_the_prefix_to_the_states_dtype():
    cache = _prefix_cache()
    keys, values = cache.update(
        torch.randn(1, 2, 5, 4).bfloat16(), torch.randn(1, 2, 5, 4).bfloat16(), 0
    )
    assert keys.dtype == values.dtype == torch.bfloat16
    assert cache.layers[0].keys.dtype == torch.float32


@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_forward_sees_the_prefix_as_inference_does(
    checkpointing, tiny_model_dir, tokenizer
):
    # The end-to-end contract with the installed transformers: in training the prefix goes
    # through FrozenPrefixCache (called by the real attention layers), in eval through the
    # plain cache; both must give the same logits.
    model, _ = prepared(tiny_model_dir, "prefix")
    data = batch(tokenizer)
    expected = logits(model, data)
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    model.train()
    got = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
    torch.testing.assert_close(got.detach(), expected, atol=1e-5, rtol=1e-4)
