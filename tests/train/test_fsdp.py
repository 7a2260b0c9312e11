"""FSDP pieces that need no process group: what is refused, and what is wrapped."""

from __future__ import annotations

import pytest

from danlu.config import load_config
from danlu.train import engine, fsdp
from danlu.utils.errors import UsageError


@pytest.mark.parametrize("method", fsdp.UNSUPPORTED)
def test_prompt_learning_methods_are_refused_with_the_reason(method):
    with pytest.raises(UsageError, match=rf"fsdp does not support method {method} \(PEFT runs"):
        fsdp.check_method(method)
    fsdp.check_method("lora")  # and the rest pass


def test_offload_on_a_cpu_run_is_refused():
    cfg = load_config(None, ["distributed=fsdp", "fsdp_offload=true"])
    with pytest.raises(UsageError, match="fsdp_offload: on a CPU run the shards already live"):
        engine._shard(cfg, model=None, device="cpu", log=print)


def test_blocks_are_the_models_own_decoder_layers(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert fsdp.block_classes(model) == {"LlamaDecoderLayer"}
    model._no_split_modules = None
    with pytest.raises(UsageError, match="does not name its decoder block class"):
        fsdp.block_classes(model)
    assert not fsdp.is_sharded(model)
