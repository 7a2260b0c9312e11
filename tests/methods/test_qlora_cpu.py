"""qlora on CPU: LoRA gradients through 4-bit bitsandbytes layers equal a dequantised reference.

The reference is the same LoRA on a plain fp32 model whose Linear weights are the dequantised
4-bit weights; gradients of the *first* layer's adapters must pass back through every later
quantised matmul, so they are the ones that would be wrong if autograd were broken there.
"""

from __future__ import annotations

import pytest
import torch
from tests.methods.helpers import batch, config, load

from danlu.methods import prepare
from danlu.utils.errors import UsageError

bnb = pytest.importorskip("bitsandbytes", reason="qlora needs bitsandbytes")


def _dequantised_reference(quantised, model_dir):
    from bitsandbytes.functional import dequantize_4bit
    from peft import get_peft_model

    from danlu.methods.lora import lora_config

    weights = {}
    for name, mod in quantised.base_model.model.named_modules():
        if type(getattr(mod, "base_layer", None)).__name__ == "Linear4bit":
            w = mod.base_layer.weight
            weights[f"{name}.weight"] = dequantize_4bit(w.data, w.quant_state)
    ref = load(model_dir)
    ref.load_state_dict(weights, strict=False)
    ref = get_peft_model(ref, lora_config(config("lora").section("lora"), ref))
    lora = {k: v for k, v in quantised.state_dict().items() if "lora_" in k}
    assert not ref.load_state_dict(lora, strict=False).unexpected_keys
    return ref


def _grads(model, data):
    model.zero_grad()
    model(**data).loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("eval_pass_first", [pytest.param(False, marks=pytest.mark.slow), True])
def test_lora_grads_match_dequantised_reference(eval_pass_first, tiny_model_dir, tokenizer):
    cfg = config("qlora")
    model = prepare(load(tiny_model_dir, cfg), cfg)
    for n, p in model.named_parameters():
        if "lora_B" in n:  # non-zero B, so every lora_A gets a gradient too
            torch.nn.init.normal_(p, std=0.05)
    data = batch(tokenizer)
    if eval_pass_first:  # an evaluation step must not switch training to another kernel
        model.eval()
        with torch.no_grad():
            model(**data)
    model.train()
    ref = _dequantised_reference(model, tiny_model_dir)
    got, want = _grads(model, data), _grads(ref, data)
    first = [n for n in got if ".layers.0." in n]
    assert first and set(got) == set(want)
    for name in got:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-4)


def test_qlora_refuses_a_full_precision_model(tiny_model_dir):
    cfg = config("qlora")
    with pytest.raises(UsageError, match="quantization_bit"):
        prepare(load(tiny_model_dir), cfg)


def test_other_methods_refuse_a_quantised_model(tiny_model_dir):
    quantised = load(tiny_model_dir, config("qlora"))
    with pytest.raises(UsageError, match="use method: qlora"):
        prepare(quantised, config("lora"))
