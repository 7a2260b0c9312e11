"""The Ollama Modelfile: its Go TEMPLATE, run through a Go-template interpreter, renders every
conversation exactly as the model's Jinja chat template does (Ollama cannot be installed here:
no package registry ships its server)."""

from __future__ import annotations

import pytest
from tests.data.template_cases import SHARED_TEMPLATES, qwen2_with
from tests.methods.gotemplate import render

from danlu.methods.modelfile import derive, go_template, modelfile
from danlu.utils.errors import UsageError

CONVERSATIONS = [
    [{"role": "user", "content": "How hot for green tea?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a\nb"},
     {"role": "assistant", "content": "80 °C."}, {"role": "user", "content": "绿茶呢？"}],
]  # fmt: skip


def _ollama(template: str, tok, messages: list[dict]) -> str:
    """What Ollama sends the model: the TEMPLATE over the request's messages."""
    w = derive(tok, template)
    data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    return render(go_template(w), data)


def _jinja(template: str, tok, messages: list[dict]) -> str:
    """The chat template's text, less the BOS that llama.cpp adds itself when the tokenizer
    does (it must not be in the Ollama template, or the model would see two)."""
    text = tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                   add_generation_prompt=True)  # fmt: skip
    bos = tok.bos_token if tok("x")["input_ids"][:1] == [tok.bos_token_id] else None
    return text[len(bos) :] if bos and text.startswith(bos) else text


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_smollm_template_round_trips_with_its_default_system(tokenizer, messages):
    template = tokenizer.chat_template
    opening = derive(tokenizer, template).opening  # SmolLM2's BOS is <|im_start|>: kept
    assert opening.startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert _ollama(template, tokenizer, messages) == _jinja(template, tokenizer, messages)


# templates that rewrite earlier turns or refuse a system turn cannot be a per-message Go
# template; they are refused with a message instead of exported wrong
REFUSED = {"Qwen-Qwen3-0.6B", "google-gemma-2-2b-it", "mistralai-Mistral-Nemo-Instruct-2407"}


@pytest.mark.parametrize("name", SHARED_TEMPLATES)
def test_real_templates_round_trip_or_are_refused(name):
    tok = qwen2_with(name)
    if name in REFUSED:
        with pytest.raises(UsageError, match=r"^export: "):
            for messages in CONVERSATIONS:
                assert _ollama(tok.chat_template, tok, messages) == _jinja(
                    tok.chat_template, tok, messages
                )
        return
    for messages in CONVERSATIONS:
        assert _ollama(tok.chat_template, tok, messages) == _jinja(tok.chat_template, tok, messages)


def test_modelfile_lines(tokenizer):
    text = modelfile("model-q4_k_m.gguf", tokenizer, tokenizer.chat_template, ["<|im_end|>"],
                     {"temperature": 0.2, "top_p": 0.9, "repetition_penalty": 1.1,
                      "do_sample": True}, 2048)  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "FROM ./model-q4_k_m.gguf" and lines[1].startswith('TEMPLATE """{{ range')
    assert 'PARAMETER stop "<|im_end|>"' in lines and "PARAMETER num_ctx 2048" in lines
    assert "PARAMETER temperature 0.2" in lines and "PARAMETER repeat_penalty 1.1" in lines
    assert not any("do_sample" in x for x in lines)


def test_no_chat_template_sends_the_prompt_as_is(tokenizer):
    text = modelfile("m.gguf", tokenizer, None, [], {}, 512)
    assert 'TEMPLATE """{{ .Prompt }}"""' in text.splitlines()


def test_a_template_without_a_go_form_leaves_the_gguf_one(caplog):
    tok = qwen2_with("Qwen-Qwen3-0.6B")
    text = modelfile("m.gguf", tok, tok.chat_template, ["<|im_end|>"], {}, 4096)
    lines = text.splitlines()
    assert lines[0] == "FROM ./m.gguf" and not any(x.startswith("TEMPLATE") for x in lines)
    assert lines[1] == ("# no TEMPLATE: export: the chat template re-renders earlier turns; "
                        "write the Ollama TEMPLATE by hand (the GGUF itself carries the template)")  # fmt: skip
    assert "the Modelfile has no TEMPLATE" in caplog.text
