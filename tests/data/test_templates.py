"""Template selection, built-in templates' exact text, and the end-of-turn closer each one trains."""

from __future__ import annotations

import pytest
from tests.conftest import shared_path
from tests.data.template_cases import SHARED_TEMPLATES, qwen2

from danlu.data.templates import get_template, to_hf_messages
from danlu.data.templates_builtin import BUILTIN
from danlu.data.types import Conversation, Message
from danlu.utils.errors import UsageError

CHAT = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "yo"},
]

# With the SmolLM2 tokenizer: bos_token = <|im_start|>, eos_token = <|im_end|>.
EXPECTED = {
    "chatml": "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    "<|im_start|>assistant\nyo<|im_end|>\n",
    "llama3": "<|im_start|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>",
    "llama2": "<|im_start|>[INST] <<SYS>>\nS\n<</SYS>>\n\nhi [/INST] yo <|im_end|>",
    "chatglm3": "[gMASK]sop<|system|>\nS<|user|>\nhi<|assistant|>\nyo<|im_end|>",
    "alpaca": "S\n\n### Instruction:\nhi\n\n### Response:\nyo<|im_end|>\n\n",
    "default": "System: S\nHuman: hi\nAssistant: yo<|im_end|>\n",
}
CLOSERS = {"chatml": "<|im_end|>", "qwen": "<|im_end|>", "llama3": "<|eot_id|>",
           "llama2": " <|im_end|>", "chatglm3": "<|im_end|>", "alpaca": "<|im_end|>",
           "default": "<|im_end|>"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_renders_literal_text(tokenizer, name):
    assert get_template(name, tokenizer).render(tokenizer, CHAT) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_closer(tokenizer, name):
    assert get_template(name, tokenizer).closer(tokenizer) == CLOSERS[name]


def test_qwen_adds_its_default_system_only_when_none_given(tokenizer):
    qwen = get_template("qwen", tokenizer)
    assert qwen.render(tokenizer, CHAT[1:2], generation_prompt=True) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert qwen.render(tokenizer, CHAT) == EXPECTED["chatml"]


def test_generation_prompts(tokenizer):
    prompts = {
        name: get_template(name, tokenizer).render(tokenizer, CHAT[:2], generation_prompt=True)
        for name in ("chatml", "alpaca", "llama3")
    }
    assert prompts["chatml"].endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert prompts["alpaca"] == "S\n\n### Instruction:\nhi\n\n### Response:\n"
    assert prompts["llama3"].endswith(
        "hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_chatml_renders_tools_calls_and_observations(tokenizer):
    conv = Conversation(
        [Message("user", "weather?"),
         Message("function_call", '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}'),
         Message("observation", "21C"), Message("assistant", "21C.")],
        "t:1", tools='[{"name": "get_weather"}]',
    )  # fmt: skip
    chatml = get_template("chatml", tokenizer)
    text = chatml.render(tokenizer, to_hf_messages(conv, chatml), [{"name": "get_weather"}])
    assert text == (
        '<|im_start|>system\n# Tools\n\n<tools>\n{"name": "get_weather"}\n</tools><|im_end|>\n'
        "<|im_start|>user\nweather?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
        "\n</tool_call><|im_end|>\n"
        "<|im_start|>tool\n21C<|im_end|>\n<|im_start|>assistant\n21C.<|im_end|>\n"
    )


def test_function_call_is_plain_text_where_the_template_has_no_tool_calls(tokenizer):
    auto = get_template("auto", tokenizer)  # SmolLM2's template knows nothing of tool_calls
    hf = to_hf_messages([Message("function_call", '{"name": "f", "arguments": {}}')], auto)
    assert hf == [{"role": "assistant", "content": '{"name": "f", "arguments": {}}'}]


def test_auto_uses_the_tokenizers_template(tokenizer):
    assert get_template("auto", tokenizer).source == tokenizer.chat_template


def test_auto_without_chat_template_names_the_builtins():
    with pytest.raises(UsageError) as err:
        get_template("auto", qwen2())
    assert str(err.value) == (
        "template: auto, but the tokenizer has no chat_template; set template: to one of "
        "chatml, qwen, llama3, llama2, chatglm3, alpaca, default or a .jinja file"
    )


def test_unknown_template_is_a_usage_error(tokenizer):
    with pytest.raises(UsageError, match=r"^template: unknown template 'chatgpt' \(not a file\)"):
        get_template("chatgpt", tokenizer)


def test_user_jinja_file(tokenizer, tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text(
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}"
    )
    template = get_template(str(path), tokenizer)
    assert template.render(tokenizer, CHAT[1:]) == "<user>hi<|im_end|><assistant>yo<|im_end|>"
    assert template.closer(tokenizer) == "<|im_end|>"


def test_template_error_is_one_line_usage_error(tokenizer, tmp_path):
    path = tmp_path / "strict.jinja"
    path.write_text("{{ raise_exception('roles must alternate\nsecond line') }}")
    with pytest.raises(UsageError) as err:
        get_template(str(path), tokenizer).render(tokenizer, CHAT)
    assert "\n" not in str(err.value)
    assert "cannot render this conversation: roles must alternate" in str(err.value)


SHARED_CLOSERS = {
    "GLM-4.6": "",
    "HuggingFaceTB-SmolLM3-3B": "<|im_end|>",
    "Qwen-Qwen2.5-7B-Instruct": "<|im_end|>",
    "Qwen-Qwen3-0.6B": "<|im_end|>",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": "<｜end▁of▁sentence｜>",
    "google-gemma-2-2b-it": "<end_of_turn>",
    "ibm-granite-granite-3.3-2B-Instruct": "<|end_of_text|>",
    "meta-llama-Llama-3.1-8B-Instruct": "<|eot_id|>",
    "microsoft-Phi-3.5-mini-instruct": "<|end|>",
    "mistralai-Mistral-Nemo-Instruct-2407": "<|im_end|>",  # its eos_token, here Qwen2's
}


@pytest.mark.parametrize("name", SHARED_TEMPLATES)
def test_shared_template_closers(name):
    template = get_template(str(shared_path("chat_templates", f"{name}.jinja")), qwen2())
    assert template.closer(qwen2()) == SHARED_CLOSERS[name]
