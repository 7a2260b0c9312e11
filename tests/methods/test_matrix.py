"""The method matrix: every registered method, on the tiny model, trains exactly what it should.

Parametrised over the registry itself: a newly registered method fails here until it has an
expected trainable-parameter formula below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from tests.methods.helpers import SMALL, batch, load, logits, prepared, train_steps

from danlu.methods import METHODS, get_method, trainable_names, trainable_summary
from danlu.methods.freeze import decoder_blocks


def _linears(base: Any) -> list[torch.nn.Linear]:
    _, blocks = decoder_blocks(base)
    return [m for m in blocks.modules() if isinstance(m, torch.nn.Linear)]


def _named(base: Any, names: set[str]) -> list[torch.nn.Linear]:
    _, blocks = decoder_blocks(base)
    return [m for n, m in blocks.named_modules() if n.rsplit(".", 1)[-1] in names]


def _kv_dim(base: Any) -> int:
    c = base.config
    return c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)


def _lora(base: Any) -> int:
    return sum(SMALL["lora_rank"] * (m.in_features + m.out_features) for m in _linears(base))


def _prefix(base: Any) -> int:
    # Without projection: one key and one value vector per layer and virtual token.
    return SMALL["pre_seq_len"] * base.config.num_hidden_layers * 2 * _kv_dim(base)


def _ptuning(base: Any) -> int:
    h, e = base.config.hidden_size, SMALL["prompt_encoder_hidden_size"]
    mlp = (h * e + e) + (e * e + e) + (e * h + h)
    return SMALL["pre_seq_len"] * h + mlp


def _ia3(base: Any) -> int:
    # peft's LLaMA default: scale k_proj/v_proj outputs and down_proj inputs.
    kv = sum(m.out_features for m in _named(base, {"k_proj", "v_proj"}))
    return kv + sum(m.in_features for m in _named(base, {"down_proj"}))


def _adalora(base: Any) -> int:
    r = SMALL["adalora_init_r"]
    return sum(r * (m.in_features + m.out_features) + r for m in _linears(base))


def _freeze(base: Any) -> int:
    _, blocks = decoder_blocks(base)
    return sum(p.numel() for p in blocks[-1].parameters())


def _full(base: Any) -> int:
    return sum(p.numel() for p in base.parameters())


EXPECTED: dict[str, Callable[[Any], int]] = {
    "full": _full,
    "freeze": _freeze,
    "lora": _lora,
    "qlora": _lora,
    "prefix": _prefix,
    "ptuning_v2": _prefix,
    "prompt": lambda base: SMALL["pre_seq_len"] * base.config.hidden_size,
    "ptuning": _ptuning,
    "ia3": _ia3,
    "adalora": _adalora,
}


def _needs(name: str) -> None:
    if name == "qlora":
        pytest.importorskip("bitsandbytes", reason="qlora needs bitsandbytes")


def _snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_trains_exactly_the_trainable_parameters_and_reloads(
    name, tiny_model_dir, tokenizer, tmp_path
):
    """A few steps change every trainable parameter and no frozen one; then save -> plain
    peft/transformers load -> identical logits."""
    _needs(name)
    model, cfg = prepared(tiny_model_dir, name)
    trainable = trainable_names(model)
    before = _snapshot(model)
    data = batch(tokenizer)
    losses = train_steps(model, name, data)
    assert all(torch.isfinite(torch.tensor(losses)))
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed == set(trainable), (
        f"frozen but changed: {sorted(changed - trainable)[:3]}; "
        f"trainable but unchanged: {sorted(trainable - changed)[:3]}"
    )
    model.save_pretrained(tmp_path / "out")
    expected = logits(model, data)
    reloaded = logits(_plain_load(tiny_model_dir, tmp_path / "out", cfg), data)
    # AdaLoRA reloads its pruned matrices at their final ranks: same maths, other float order.
    tol = 1e-6 if name == "adalora" else 0.0
    torch.testing.assert_close(reloaded, expected, atol=tol, rtol=0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_trainable_count_matches_formula(name, tiny_model_dir):
    _needs(name)
    assert name in EXPECTED, f"method {name!r} has no expected trainable-parameter formula"
    model, _ = prepared(tiny_model_dir, name)
    base = load(tiny_model_dir)  # the formulas read the untouched architecture
    counted = sum(p.numel() for n, p in model.named_parameters() if n in trainable_names(model))
    assert counted == EXPECTED[name](base)
    trainable, total, pct = trainable_summary(model)
    assert trainable == counted and 0 < pct <= 100 and total >= trainable


def _plain_load(base_dir, saved_dir, cfg) -> Any:
    from transformers import AutoModelForCausalLM

    if not get_method(cfg.method).is_adapter:
        return AutoModelForCausalLM.from_pretrained(saved_dir)
    return _plain_peft_load(base_dir, saved_dir, cfg)


def _plain_peft_load(base_dir, adapter_dir, cfg) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if cfg.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
    base = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    if cfg.method == "qlora":
        from danlu.methods.qlora import disable_cpu_inference_repack

        disable_cpu_inference_repack(base)  # same kernel path as training (see qlora.py)
    return PeftModel.from_pretrained(base, adapter_dir)
