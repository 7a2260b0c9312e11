"""The OpenAI-compatible server against the official `openai` client and raw HTTP: shapes,
streaming, echo/logprobs, every bad-request kind, auth, limits, disconnects. The HTTP contract:
every test runs once per installed backend (native, and llamacpp on the parrot exported to an
f16 GGUF), against the same expected texts."""

from __future__ import annotations

import http.client
import importlib.util
import json
import threading
import time
from urllib.parse import urlparse

import pytest
import requests
from tests.infer.helpers import (
    PARROT_QUESTION,
    PARROT_REPLY,
    PARROT_STORY,
    STORY_PROMPT,
    serve,
)

from danlu.infer.params import GenParams

openai = pytest.importorskip("openai", reason="the openai client is a dev dependency")

CHAT = [{"role": "user", "content": PARROT_QUESTION}]

BACKENDS = [
    "native",
    pytest.param(
        "llamacpp",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("llama_cpp") is None,
            reason="needs llama-cpp-python (the gguf extra)",
        ),
    ),
]


@pytest.fixture(scope="module", params=BACKENDS)
def parrot(request, parrot_dir, parrot_gguf):
    """The parrot behind each backend (shared within the module: tests must not change it)."""
    from danlu.config import ModelArgs
    from danlu.infer.engine import Engine, EngineConfig

    model = str(parrot_dir) if request.param == "native" else str(parrot_gguf())
    engine = Engine.load(
        ModelArgs(model=model, device="cpu", threads=1),
        name="parrot",
        config=EngineConfig(max_batch_size=8, batch_wait_ms=2, backend=request.param),
    )
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(parrot):
    yield from serve(parrot)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=30)


def healthy(server) -> None:
    r = requests.get(server.url + "/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_models_and_health(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["parrot"]
    assert models.data[0].object == "model" and models.data[0].owned_by == "danlu"
    body = requests.get(server.url + "/health", timeout=10).json()
    assert body["status"] == "ok" and body["model"] == "parrot"


def test_chat_non_streaming(client, parrot):
    r = client.chat.completions.create(model="parrot", messages=CHAT, temperature=0, max_tokens=60)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "parrot"
    assert abs(r.created - time.time()) < 60
    (choice,) = r.choices
    assert choice.message.role == "assistant" and choice.message.content == PARROT_REPLY
    assert choice.finish_reason == "stop" and choice.index == 0
    prompt = parrot.chat_prompt(CHAT)
    reply_tokens = parrot.chat(CHAT, GenParams(max_new_tokens=60, temperature=0)).tokens
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.completion_tokens == len(reply_tokens)
    assert r.usage.total_tokens == len(prompt) + len(reply_tokens)


def test_chat_streaming_concatenates_to_the_full_text(client):
    stream = client.chat.completions.create(
        model="parrot",
        messages=CHAT,
        temperature=0,
        max_tokens=60,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(pieces) == PARROT_REPLY
    assert len(pieces) > 5 and all("\ufffd" not in p for p in pieces)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > len(pieces)


def test_sse_wire_format_ends_with_done(server):
    body = {"model": "parrot", "messages": CHAT, "temperature": 0, "max_tokens": 5, "stream": True}
    r = requests.post(server.url + "/v1/chat/completions", json=body, stream=True, timeout=30)
    assert r.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in r.iter_lines(decode_unicode=True) if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_chat_stop_n_seed_and_logprobs(client):
    r = client.chat.completions.create(model="parrot", messages=CHAT, temperature=0, stop=["Hello"])
    assert (
        r.choices[0].message.content == "丹炉炼丹，你好世界！🔥 "
        and r.choices[0].finish_reason == "stop"
    )
    kw = {
        "model": "parrot",
        "messages": [{"role": "user", "content": "hm"}],
        "max_tokens": 8,
        "temperature": 1.0,
        "n": 3,
        "seed": 7,
    }
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    lp = client.chat.completions.create(
        model="parrot", messages=CHAT, temperature=0, max_tokens=4, logprobs=True, top_logprobs=2
    )
    content = lp.choices[0].logprobs.content
    assert len(content) == 4 and all(len(t.top_logprobs) == 2 for t in content)
    assert all(t.logprob == pytest.approx(t.top_logprobs[0].logprob, abs=1e-5) for t in content)
    text = b"".join(bytes(t.bytes) for t in content).decode("utf-8", "ignore")
    assert text and PARROT_REPLY.startswith(text)


def test_completions_string_tokens_and_lists(client, parrot):
    r = client.completions.create(model="parrot", prompt=STORY_PROMPT, max_tokens=40, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].text == PARROT_STORY and r.choices[0].finish_reason == "stop"
    ids = parrot.encode(STORY_PROMPT)
    r2 = client.completions.create(model="parrot", prompt=ids, max_tokens=40, temperature=0)
    assert r2.choices[0].text == PARROT_STORY
    r3 = client.completions.create(
        model="parrot", prompt=[ids, ids[:2]], max_tokens=3, temperature=0, n=2
    )
    assert [c.index for c in r3.choices] == [0, 1, 2, 3]
    assert r3.choices[0].text == r3.choices[1].text == _greedy_text(parrot, ids, 3)
    assert r3.usage.prompt_tokens == len(ids) + 2 and r3.usage.completion_tokens == 12
    r4 = client.completions.create(
        model="parrot", prompt=[STORY_PROMPT, "丹炉"], max_tokens=2, temperature=0
    )
    assert len(r4.choices) == 2 and r4.choices[0].text == _greedy_text(parrot, ids, 2)


def test_completions_streaming_matches_non_streaming(client):
    whole = client.completions.create(
        model="parrot", prompt=STORY_PROMPT, max_tokens=40, temperature=0
    )
    chunks = list(
        client.completions.create(
            model="parrot", prompt=STORY_PROMPT, max_tokens=40, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text == PARROT_STORY
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_echo_logprobs_in_lm_eval_shape(client, parrot):
    ids = parrot.encode(STORY_PROMPT + PARROT_STORY)
    r = client.completions.create(
        model="parrot", prompt=ids, max_tokens=1, temperature=0, logprobs=1, echo=True
    )
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids) + 1
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert r.choices[0].text.startswith(STORY_PROMPT + PARROT_STORY)
    # the parrot knows this text: every token after the first few is its greedy choice
    ctx = len(parrot.encode(STORY_PROMPT))
    for tok, top in zip(lp.token_logprobs[ctx:-1], lp.top_logprobs[ctx:-1], strict=True):
        assert tok == pytest.approx(max(top.values()))
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    zero = client.completions.create(
        model="parrot", prompt=ids, max_tokens=0, echo=True, logprobs=0
    )
    assert zero.choices[0].logprobs.token_logprobs[1:] == pytest.approx(
        lp.token_logprobs[1:-1], abs=1e-4
    )
    assert zero.usage.completion_tokens == 0


BAD = [
    ("malformed JSON", "/v1/chat/completions", b'{"model": "parrot", "messages": [', 400, None),
    ("body not an object", "/v1/chat/completions", b"[1, 2]", 400, None),
    ("unknown model", "/v1/chat/completions", {"model": "gpt-9", "messages": CHAT}, 404, "model"),
    ("missing model", "/v1/completions", {"prompt": "x"}, 400, "model"),
    (
        "negative max_tokens",
        "/v1/chat/completions",
        {"model": "parrot", "messages": CHAT, "max_tokens": -5},
        400,
        "max_tokens",
    ),
    (
        "max_tokens over the limit",
        "/v1/completions",
        {"model": "parrot", "prompt": "x", "max_tokens": 100000},
        400,
        "max_tokens",
    ),
    (
        "temperature out of range",
        "/v1/chat/completions",
        {"model": "parrot", "messages": CHAT, "temperature": 3},
        400,
        "temperature",
    ),
    ("top_p zero", "/v1/completions", {"model": "parrot", "prompt": "x", "top_p": 0}, 400, "top_p"),
    (
        "temperature not a number",
        "/v1/completions",
        {"model": "parrot", "prompt": "x", "temperature": "hot"},
        400,
        "temperature",
    ),
    ("n too large", "/v1/completions", {"model": "parrot", "prompt": "x", "n": 1000}, 400, "n"),
    ("no messages", "/v1/chat/completions", {"model": "parrot", "messages": []}, 400, "messages"),
    (
        "bad role",
        "/v1/chat/completions",
        {"model": "parrot", "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages[0].role",
    ),
    ("bad prompt type", "/v1/completions", {"model": "parrot", "prompt": {"a": 1}}, 400, "prompt"),
    (
        "token id out of vocabulary",
        "/v1/completions",
        {"model": "parrot", "prompt": [1, 10**9]},
        400,
        "prompt",
    ),
    (
        "too many stops",
        "/v1/completions",
        {"model": "parrot", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]},
        400,
        "stop",
    ),
    (
        "logprobs too many",
        "/v1/completions",
        {"model": "parrot", "prompt": "x", "logprobs": 50},
        400,
        "logprobs",
    ),
    (
        "prompt longer than the context",
        "/v1/completions",
        {"model": "parrot", "prompt": [5] * 300},
        400,
        "messages",
    ),
]


@pytest.mark.parametrize(("what", "path", "body", "status", "param"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_openai_errors_and_the_server_lives(
    server, what, path, body, status, param
):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = requests.post(
        server.url + path, data=data, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    healthy(server)


def test_context_error_is_openais(server):
    r = requests.post(
        server.url + "/v1/completions",
        timeout=30,
        json={"model": "parrot", "prompt": [5] * 250, "max_tokens": 10},
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["message"].startswith(
        "This model's maximum context length is 256 tokens. However, you requested 260 tokens"
    )


def test_openai_client_raises_its_own_error_types(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=CHAT)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="parrot", messages=CHAT, temperature=-1)


JSON = {"Content-Type": "application/json"}


def test_body_size_route_and_method_errors(server):
    big = json.dumps({"model": "parrot", "prompt": "x" * 70_000}).encode()
    r = requests.post(server.url + "/v1/completions", data=big, headers=JSON, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():
        yield b'{"model": "parrot", "prompt": "'
        for _ in range(10):
            yield b"x" * 10_000
        yield b'"}'

    r = requests.post(
        server.url + "/v1/completions", data=chunks(), headers=JSON, timeout=30
    )  # no Content-Length
    assert r.status_code == 413
    r = requests.get(server.url + "/v1/nothing", timeout=10)
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = requests.get(server.url + "/v1/chat/completions", timeout=10)
    assert r.status_code == 405 and "error" in r.json()
    healthy(server)


def test_api_key(parrot):
    from danlu.infer.launch import start_server
    from danlu.infer.server import ServerOptions

    with start_server(parrot, options=ServerOptions(api_key="sk-right-key-123")) as srv:
        for headers in (
            {},
            {"Authorization": "Bearer sk-wrong-key-456"},
            {"Authorization": "Basic abc"},
        ):
            r = requests.get(srv.url + "/v1/models", headers=headers, timeout=10)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert r.headers["www-authenticate"] == "Bearer"
        wrong = requests.post(
            srv.url + "/v1/completions",
            json={"model": "parrot", "prompt": "x"},
            headers={"Authorization": "Bearer sk-wrong-key-456"},
            timeout=10,
        )
        assert wrong.status_code == 401 and "sk-" in wrong.json()["error"]["message"]
        assert "wrong-key" not in wrong.json()["error"]["message"]  # the key is masked
        bad = openai.OpenAI(base_url=srv.base_url, api_key="sk-wrong-key-456", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=srv.base_url, api_key="sk-right-key-123", max_retries=0)
        r = good.chat.completions.create(
            model="parrot", messages=CHAT, temperature=0, max_tokens=60
        )
        assert r.choices[0].message.content == PARROT_REPLY
        assert requests.get(srv.url + "/health", timeout=10).status_code == 200  # not under /v1
        assert requests.get(srv.url + "/", timeout=10).status_code == 200


def test_concurrency_limit_gives_429_then_recovers(parrot, slow_steps):
    from danlu.infer.launch import start_server
    from danlu.infer.server import ServerOptions

    with start_server(parrot, options=ServerOptions(max_concurrent=1)) as srv:
        conn = _open_stream(srv, max_tokens=200)
        _wait_for(lambda: requests.get(srv.url + "/health", timeout=5).json()["in_flight"] == 1)
        r = requests.post(
            srv.url + "/v1/completions",
            json={"model": "parrot", "prompt": "x", "max_tokens": 1},
            timeout=10,
        )
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        conn.close()  # the client goes away mid-stream: its slot frees
        _wait_for(lambda: requests.get(srv.url + "/health", timeout=5).json()["in_flight"] == 0)
        r = requests.post(
            srv.url + "/v1/completions",
            json={"model": "parrot", "prompt": "x", "max_tokens": 1},
            timeout=10,
        )
        assert r.status_code == 200


def test_disconnect_mid_stream_frees_the_engine_row(server, parrot, slow_steps):
    conn = _open_stream(server, max_tokens=200)
    _wait_for(lambda: parrot.scheduler.load[0] == 1)
    conn.close()
    _wait_for(
        lambda: (
            parrot.scheduler.load == (0, 0)
            and requests.get(server.url + "/health", timeout=5).json()["in_flight"] == 0
        )
    )
    healthy(server)


def test_concurrent_clients_are_batched_and_each_gets_its_answer(server, parrot):
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=60)
    results = [None] * 6
    rows_before = parrot.scheduler.stats["max_rows"]

    def ask(i):
        if i % 2:
            r = client.chat.completions.create(
                model="parrot", messages=CHAT, temperature=0, max_tokens=60
            )
            results[i] = r.choices[0].message.content
        else:
            r = client.completions.create(
                model="parrot", prompt=STORY_PROMPT, max_tokens=40, temperature=0
            )
            results[i] = r.choices[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [PARROT_STORY, PARROT_REPLY] * 3
    assert max(rows_before, parrot.scheduler.stats["max_rows"]) >= 2


@pytest.fixture
def slow_steps(parrot, monkeypatch):
    """Decode steps of 20 ms, so a 200-token stream is surely still running when we act."""
    decode = parrot.runner.decode

    def slow(batch):
        time.sleep(0.02)
        return decode(batch)

    monkeypatch.setattr(parrot.runner, "decode", slow)


def test_disconnect_while_waiting_for_a_whole_answer(server, parrot, slow_steps):
    url = urlparse(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    body = {
        "model": "parrot",
        "prompt": "x",
        "max_tokens": 200,
        "ignore_eos": True,
        "temperature": 0,
    }
    conn.request(
        "POST",
        "/v1/completions",
        body=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    _wait_for(lambda: parrot.scheduler.load[0] == 1)
    steps = parrot.scheduler.stats["steps"]
    conn.close()  # gone before the answer: the engine stops working for it
    _wait_for(lambda: parrot.scheduler.load == (0, 0))
    assert parrot.scheduler.stats["steps"] - steps < 150
    _wait_for(lambda: requests.get(server.url + "/health", timeout=5).json()["in_flight"] == 0)
    healthy(server)


def _greedy_text(engine, ids, n: int) -> str:
    return engine.generate([ids], GenParams(max_new_tokens=n, temperature=0))[0].text


def _open_stream(srv, max_tokens: int) -> http.client.HTTPConnection:
    """Start a long streamed completion with ignore_eos and read its first event."""
    url = urlparse(srv.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    body = json.dumps(
        {
            "model": "parrot",
            "prompt": "x",
            "max_tokens": max_tokens,
            "stream": True,
            "ignore_eos": True,
            "temperature": 0,
        }
    )
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline().startswith(b"data: ")
    return conn


def _wait_for(cond, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
