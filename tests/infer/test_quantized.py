"""Quantised serving (`--quantization-bit 8|4`, bitsandbytes) on the CPU: the engine loads the
model in 8 or 4 bits, answers through the server's own path, and the weights take the memory
the estimator (danlu.plan) says they take."""

from __future__ import annotations

import pytest

from danlu.config import ModelArgs
from danlu.infer.engine import Engine, EngineConfig
from danlu.infer.params import GenParams

pytest.importorskip("bitsandbytes", reason="quantised serving needs bitsandbytes")


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory, tokenizer):
    """Block linears large against the embeddings (hidden 256, 4 layers), so quantising them
    shows in the footprint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    dest = tmp_path_factory.mktemp("wide")
    LlamaForCausalLM(config).save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest


def _linear_bytes(model, cls) -> int:
    """Bytes held by the quantised block linears' weights (what the estimator's int8/int4 rates
    cover)."""
    return sum(
        m.weight.numel() * m.weight.element_size() for m in model.modules() if isinstance(m, cls)
    )


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_engine_answers_in_the_memory_the_estimator_gives(wide_dir, bits):
    import bitsandbytes as bnb

    from danlu.plan.setup import DTYPE_BYTES
    from danlu.plan.sources import load_arch

    arch = load_arch(str(wide_dir))
    linear_params = arch.layers * arch.block_linear_params()
    config = EngineConfig(max_batch_size=2, batch_wait_ms=0)
    args = ModelArgs(model=str(wide_dir), device="cpu", threads=1, quantization_bit=bits)
    with Engine.load(args, config=config) as engine:
        cls = bnb.nn.Linear8bitLt if bits == 8 else bnb.nn.Linear4bit
        quantised = [m for m in engine.model.modules() if isinstance(m, cls)]
        assert len(quantised) == arch.layers * 7  # q k v o gate up down, every block
        measured = _linear_bytes(engine.model, cls)
        expected = linear_params * DTYPE_BYTES["int8" if bits == 8 else "int4"]
        # the estimator adds the block scales (int8: none counted in weight; nf4: ~3%)
        assert measured == pytest.approx(expected, rel=0.04)
        chat = [{"role": "user", "content": "你好"}]
        greedy = GenParams(max_new_tokens=12, temperature=0, ignore_eos=True)
        first = engine.chat(chat, greedy)
        assert len(first.tokens) == 12 and first.finish_reason == "length"
        assert engine.chat(chat, greedy).tokens == first.tokens  # deterministic
        both = engine.generate([engine.chat_prompt(chat)] * 2, greedy)
        assert [c.tokens for c in both] == [first.tokens, first.tokens]  # batched == single
    import torch

    with Engine.load(
        ModelArgs(model=str(wide_dir), device="cpu", threads=1), config=config
    ) as plain:
        blocks = plain.model.model.layers
        fp32 = _linear_bytes(blocks, torch.nn.Linear)
        assert fp32 == linear_params * 4  # the plain CPU engine holds them in float32
    assert fp32 / measured >= (3.9 if bits == 8 else 7.5)  # 4 B -> 1 B, or -> 0.5 B a weight
