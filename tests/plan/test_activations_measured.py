"""The per-block activation formula equals what autograd really saves (transformers LLaMA)."""

from __future__ import annotations

import pytest

from danlu.plan import Arch, Setup
from danlu.plan.activations import layer_bytes_per_token

torch = pytest.importorskip("torch")


def _saved_bytes(arch: Arch, layers: int, dtype) -> int:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=arch.vocab,
        hidden_size=arch.hidden,
        intermediate_size=arch.intermediate,
        num_hidden_layers=layers,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(cfg, dtype=dtype).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:  # weights are not activations
            seen[st.data_ptr()] = st.nbytes()
        return t

    ids = torch.randint(0, arch.vocab, (2, 32))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids, use_cache=False)
    return sum(seen.values())


@pytest.mark.parametrize(("dtype", "name"), [("float32", "fp32"), ("bfloat16", "bf16")])
def test_block_formula_matches_saved_tensors(dtype, name):
    arch = Arch(
        name="t",
        hidden=96,
        layers=1,
        heads=6,
        kv_heads=2,
        intermediate=256,
        vocab=128,
        tie_embeddings=True,
    )
    tdtype = getattr(torch, dtype)
    per_block = (_saved_bytes(arch, 3, tdtype) - _saved_bytes(arch, 1, tdtype)) / 2 / (2 * 32)
    s = Setup(method="full", weights=name, device="cpu", master_weights=False)
    assert per_block == layer_bytes_per_token(arch, s)
