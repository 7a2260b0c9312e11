"""Tool calls and reasoning through the server and the official openai client: a tiny model
trained to call a tool for one question and to reason before answering another."""

from __future__ import annotations

import json

import pytest
import requests
from tests.infer.helpers import TOOLS, WEATHER_Q, WHY_Q

openai = pytest.importorskip("openai", reason="the openai client is a dev dependency")


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
    ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
     "tool_choice must be \"auto\", \"none\", \"required\" or"),
    ({"tool_choice": "sometimes"}, "naming one of the tools"),
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


NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("choice", ["required", NAMED], ids=["required", "named"])
def test_a_forced_call_opens_the_answer_in_the_prompt(served, choice):
    """A forced call's opening is written after the generation prompt (the model can only go
    on with a call), whole and streamed; the opening's tokens count as prompt tokens."""
    server, client = served
    free = _ask(client, WEATHER_Q, tools=TOOLS)
    forced = _ask(client, WEATHER_Q, tools=TOOLS, tool_choice=choice)
    (choice_,) = forced.choices
    assert choice_.finish_reason == "tool_calls" and choice_.message.content is None
    (call,) = choice_.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather", {"city": "Hangzhou"})  # fmt: skip
    opening = '<tool_call>\n{"name":' + (' "get_weather", "arguments":' if choice is NAMED else "")
    tok = server.engine.tokenizer
    plain = server.engine.chat_text([{"role": "user", "content": WEATHER_Q}], TOOLS)
    assert forced.usage.prompt_tokens == len(tok.encode(plain + opening, add_special_tokens=False))
    assert forced.usage.prompt_tokens > free.usage.prompt_tokens
    chunks = list(_ask(client, WEATHER_Q, tools=TOOLS, tool_choice=choice, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert not "".join(d.content or "" for d in deltas)
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert [(tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == [
        ("get_weather", {"city": "Hangzhou"})]  # fmt: skip


def test_a_forced_call_the_model_cannot_finish_is_content_not_a_500(served):
    _, client = served
    # trained to reason here, not to call: whatever follows the opening, the server answers
    (choice,) = _ask(client, WHY_Q, tools=TOOLS, tool_choice=NAMED).choices
    if choice.message.tool_calls is None:
        assert choice.message.content.startswith('<tool_call>\n{"name": "get_weather"')
        assert choice.finish_reason in ("stop", "length")
    else:
        assert choice.finish_reason == "tool_calls"
