"""`danlu serve --rag-index`: the last user turn is grounded before the model sees it, the
response carries the passages, a question with no close passage gets the refusal without the
model, and /v1/embeddings answers the official openai client (which asks for base64)."""

from __future__ import annotations

import json

import pytest
import requests

from danlu.infer.grounding import Knowledge

openai = pytest.importorskip("openai", reason="the openai client is a dev dependency")
PASSAGES = [{"source": "docs/tea.md#1", "text": "Green tea: 80 °C.", "score": 0.9, "headings": []}]


def _ground(question: str):
    if "unknown" in question:
        return "", [], "The documents do not say."
    return f"Known: {PASSAGES[0]['text']}\nQuestion: {question}", PASSAGES, None


def _embed(texts):
    return [[float(len(t)), 0.5, -1.25] for t in texts], sum(len(t.split()) for t in texts)


@pytest.fixture(scope="module")
def grounded(parrot):
    from danlu.infer.launch import start_server
    from danlu.infer.server import ServerOptions

    options = ServerOptions(knowledge=Knowledge(_ground, _embed, "bag"))
    with start_server(parrot, options=options) as handle:
        yield handle


def _post(server, path, body):
    return requests.post(server.url + path, json=body, timeout=60)


def test_chat_is_grounded_and_returns_its_passages(grounded, parrot):
    body = {"model": "parrot", "messages": [{"role": "user", "content": "How hot?"}],
            "max_tokens": 5, "temperature": 0}  # fmt: skip
    r = _post(grounded, "/v1/chat/completions", body)
    assert r.status_code == 200
    out = r.json()
    assert out["passages"] == PASSAGES
    seen = parrot.chat_prompt([{"role": "user", "content": _ground("How hot?")[0]}])
    assert out["usage"]["prompt_tokens"] == len(seen)  # the model got the grounded turn


def test_streaming_sends_the_passages_first(grounded):
    body = {"model": "parrot", "messages": [{"role": "user", "content": "How hot?"}],
            "max_tokens": 3, "stream": True}  # fmt: skip
    r = requests.post(grounded.url + "/v1/chat/completions", json=body, stream=True, timeout=60)
    chunks = [json.loads(line[6:]) for line in r.iter_lines(decode_unicode=True)
              if line.startswith("data: {")]  # fmt: skip
    assert chunks[0]["passages"] == PASSAGES and all("passages" not in c for c in chunks[1:])


@pytest.mark.parametrize("stream", [False, True])
def test_no_close_passage_gets_the_refusal(grounded, stream):
    client = openai.OpenAI(base_url=grounded.base_url, api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "an unknown thing?"}]
    if not stream:
        r = client.chat.completions.create(model="parrot", messages=messages)
        assert r.choices[0].message.content == "The documents do not say."
        assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 0
        return
    parts = client.chat.completions.create(model="parrot", messages=messages, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in parts)
    assert text == "The documents do not say."


def test_embeddings_through_the_openai_client(grounded):
    client = openai.OpenAI(base_url=grounded.base_url, api_key="x", max_retries=0)
    r = client.embeddings.create(model="bag", input=["green tea", "a"])
    assert [d.embedding for d in r.data] == [[9.0, 0.5, -1.25], [1.0, 0.5, -1.25]]
    assert r.model == "bag" and r.usage.prompt_tokens == 3
    raw = _post(grounded, "/v1/embeddings", {"input": "x", "encoding_format": "float"}).json()
    assert raw["data"][0]["embedding"] == [1.0, 0.5, -1.25] and raw["object"] == "list"


@pytest.mark.parametrize(
    ("body", "param"),
    [({"input": [1, 2]}, "input"), ({"input": []}, "input"), ({"input": "x", "encoding_format": "hex"},
                                                              "encoding_format")],
)  # fmt: skip
def test_bad_embedding_requests_are_400(grounded, body, param):
    r = _post(grounded, "/v1/embeddings", body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_no_embeddings_route_without_knowledge(server):
    assert _post(server, "/v1/embeddings", {"input": "x"}).status_code == 404


def test_the_chat_page_lists_the_sources(grounded):
    page = requests.get(grounded.url + "/", timeout=10).text
    assert "if (chunk.passages) sources(" in page and 'className = "sources"' in page
