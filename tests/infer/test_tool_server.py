"""Tool calls and reasoning through the server and the official openai client: a tiny model
trained to call a tool for one question and to reason before answering another."""

from __future__ import annotations

import json

import pytest
import requests

openai = pytest.importorskip("openai", reason="the openai client is a dev dependency")

WEATHER_Q = "What is the weather in Hangzhou?"
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Hangzhou"}}\n</tool_call>'
WHY_Q = "Should I take an umbrella?"
THINK = "<think>It rains in spring.</think>\n\nTake an umbrella."
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip


@pytest.fixture(scope="module")
def caller_dir(tmp_path_factory, tokenizer):
    """The lively model with ChatML (tools rendered Qwen-style) and <think> tokens, overfitted
    to CALL for WEATHER_Q (with TOOLS) and THINK for WHY_Q."""
    from tests.infer.conftest import _lively
    from tests.infer.helpers import overfit
    from transformers import AutoTokenizer

    from danlu.data.templates_builtin import BUILTIN

    dest = tmp_path_factory.mktemp("caller")
    tokenizer.save_pretrained(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    tok.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tok.chat_template = BUILTIN["chatml"]
    model = _lively(tok, seed=2)
    texts = [
        tok.apply_chat_template([{"role": "user", "content": WEATHER_Q}], tools=TOOLS,
                                tokenize=False, add_generation_prompt=True) + CALL + "<|im_end|>",
        tok.apply_chat_template([{"role": "user", "content": WHY_Q}], tokenize=False,
                                add_generation_prompt=True) + THINK + "<|im_end|>",
    ]  # fmt: skip
    overfit(model, tok, texts, "caller", steps=300)
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def served(caller_dir):
    from danlu.config import ModelArgs
    from danlu.infer.engine import Engine, EngineConfig
    from danlu.infer.launch import start_server

    engine = Engine.load(ModelArgs(model=str(caller_dir), device="cpu"), name="caller",
                         config=EngineConfig(max_batch_size=4, batch_wait_ms=2))  # fmt: skip
    try:
        with start_server(engine) as handle:
            yield handle, openai.OpenAI(base_url=handle.base_url, api_key="x", max_retries=0,
                                        timeout=60)  # fmt: skip
    finally:
        engine.close()


def _ask(client, question, **kw):
    return client.chat.completions.create(model="caller", temperature=0, max_tokens=60,
                                          messages=[{"role": "user", "content": question}], **kw)  # fmt: skip


def test_a_tool_call_comes_back_as_tool_calls(served):
    _, client = served
    (choice,) = _ask(client, WEATHER_Q, tools=TOOLS).choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Hangzhou"}


def test_a_streamed_tool_call(served):
    _, client = served
    chunks = list(_ask(client, WEATHER_Q, tools=TOOLS, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert not "".join(d.content or "" for d in deltas).strip()  # the call's text is not content
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert [(tc.index, tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == [
        (0, "get_weather", {"city": "Hangzhou"})
    ]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_tool_choice_none_renders_no_tools_and_parses_nothing(served):
    server, client = served
    (choice,) = _ask(client, WEATHER_Q, tools=TOOLS, tool_choice="none").choices
    assert choice.finish_reason in ("stop", "length") and choice.message.tool_calls is None
    text = server.engine.chat_text([{"role": "user", "content": WEATHER_Q}], None)
    assert "get_weather" not in text


def test_reasoning_is_apart_from_content(served):
    _, client = served
    (choice,) = _ask(client, WHY_Q).choices
    assert choice.message.content == "Take an umbrella."
    assert choice.message.model_extra["reasoning_content"] == "It rains in spring."
    chunks = list(_ask(client, WHY_Q, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Take an umbrella."
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == (
        "It rains in spring."
    )


def test_a_tool_result_turn_is_rendered(served):
    server, client = served
    first = _ask(client, WEATHER_Q, tools=TOOLS).choices[0].message
    messages = [{"role": "user", "content": WEATHER_Q},
                first.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "小雨 12°C"}]  # fmt: skip
    r = client.chat.completions.create(model="caller", messages=messages, tools=TOOLS,
                                       temperature=0, max_tokens=5)  # fmt: skip
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    from danlu.infer.openai_api import _messages

    text = server.engine.chat_text(_messages(messages), TOOLS)
    assert "<|im_start|>tool\n小雨 12°C<|im_end|>" in text  # chatml: the result is a tool turn
    assert '"arguments": {"city": "Hangzhou"}' in text  # the call, re-rendered as trained


@pytest.mark.parametrize(("extra", "message"), [
    ({"tool_choice": "required"}, 'tool_choice: only "auto" and "none" are supported'),
    ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name must be a non-empty string"),
    ({"tools": "get_weather"}, "tools must be an array"),
])  # fmt: skip
def test_bad_tool_requests_get_400(served, extra, message):
    server, _ = served
    body = {
        "model": "caller",
        "messages": [{"role": "user", "content": "q"}],
        "tools": TOOLS,
        **extra,
    }
    r = requests.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400 and message in r.json()["error"]["message"]
