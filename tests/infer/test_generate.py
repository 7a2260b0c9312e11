"""Streamed generation with the chat template (the demo's path)."""

import pytest

from danlu.config import ModelArgs
from danlu.infer.generate import stream_chat
from danlu.models import load_model


def test_stream_matches_plain_greedy_generate(tiny_model_dir):
    import torch

    loaded = load_model(ModelArgs(model=str(tiny_model_dir)))
    msgs = [{"role": "user", "content": "hello"}]
    pieces = list(stream_chat(loaded.model, loaded.tokenizer, msgs, max_new_tokens=12))
    tok = loaded.tokenizer
    enc = tok.apply_chat_template(
        msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = loaded.model.generate(
            **enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id
        )
    expected = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "".join(pieces) == expected


@pytest.mark.slow
def test_real_embedded_model_answers(capsys):
    """The real SmolLM2 through `danlu chat -q` (greedy): it knows 2 + 2."""
    from danlu.cli import main

    assert main(["chat", "-q", "What is 2+2?", "--temperature", "0", "--max-new-tokens", "24"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Assistant: ") and "4" in out
