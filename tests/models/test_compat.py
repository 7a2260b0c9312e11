"""The renamed transformers APIs are used under the installed release's current names: a
forward with the cache keyword and TrainingArguments with the checkpointing fields raise no
deprecation warning (run under warnings-as-errors) and really take effect."""

from __future__ import annotations

import warnings

import pytest
import torch

from danlu.models.compat import cache_keyword, checkpointing_fields


def _tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize("wrapped", [False, True])
def test_cache_keyword_is_the_one_the_model_fills(wrapped):
    from peft import LoraConfig, get_peft_model
    from transformers import DynamicCache

    model = _tiny()
    if wrapped:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft's own deprecated read, not ours
            model = get_peft_model(model, LoraConfig(target_modules=["q_proj"], r=2))
    cache = DynamicCache()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True, **{cache_keyword(model): cache})
    assert cache.get_seq_length() == 3  # the model used our cache, not one of its own


def test_checkpointing_fields_switch_checkpointing_on_without_a_warning(tmp_path):
    from transformers import TrainingArguments

    flag, kwargs = checkpointing_fields()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = TrainingArguments(
            output_dir=str(tmp_path), use_cpu=True, **{flag: True, kwargs: {"use_reentrant": False}}
        )
    assert getattr(args, flag) is True
    assert getattr(args, kwargs) == {"use_reentrant": False}
