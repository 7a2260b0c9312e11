"""A server without an API key refuses what a web page in the user's browser could send it:
cross-origin requests, a rebound DNS name as Host, and POSTs that are not JSON; its own chat
page, and clients that are not browsers, are served as before."""

from __future__ import annotations

import pytest
import requests
from tests.infer.helpers import PARROT_QUESTION

from danlu.infer.guard import browser_refusal

CHAT = {"model": "parrot", "messages": [{"role": "user", "content": PARROT_QUESTION}],
        "max_tokens": 4, "temperature": 0}  # fmt: skip


def _headers(**extra: str) -> dict[str, str]:
    return {"host": "127.0.0.1:8000", "content-type": "application/json", **extra}


@pytest.mark.parametrize(
    ("headers", "server_ip", "method", "code"),
    [
        (_headers(), "127.0.0.1", "POST", None),
        (_headers(host="localhost:8000"), "127.0.0.1", "POST", None),
        (_headers(host="[::1]:8000"), "::1", "POST", None),
        (_headers(origin="http://127.0.0.1:8000"), "127.0.0.1", "POST", None),
        (_headers(host="evil.example:8000"), "127.0.0.1", "POST", "forbidden_host"),
        (_headers(origin="https://evil.example"), "127.0.0.1", "POST", "cross_origin_refused"),
        (_headers(origin="null"), "127.0.0.1", "POST", "cross_origin_refused"),
        (_headers(origin="http://localhost:8000"), "127.0.0.1", "POST", "cross_origin_refused"),
        (_headers(**{"content-type": "text/plain"}), "127.0.0.1", "POST", "unsupported_media_type"),
        ({"host": "127.0.0.1:8000"}, "127.0.0.1", "POST", "unsupported_media_type"),
        ({"host": "127.0.0.1:8000"}, "127.0.0.1", "GET", None),
        # bound to all interfaces: any Host name, but still same-origin only
        (_headers(host="gpu-box:8000"), "0.0.0.0", "POST", None),
        (_headers(host="gpu-box:8000", origin="http://gpu-box:8000"), "0.0.0.0", "POST", None),
        (_headers(host="gpu-box:8000", origin="http://evil.example"), "0.0.0.0", "POST",
         "cross_origin_refused"),
    ],
)  # fmt: skip
def test_browser_refusal_rules(headers, server_ip, method, code):
    refused = browser_refusal(headers, server_ip, method)
    assert (refused.code if refused else None) == code


def test_live_server_refuses_browser_attacks_and_serves_its_own_page(server):
    url = server.url + "/v1/chat/completions"
    own = server.url  # e.g. http://127.0.0.1:PORT: the chat page's own origin
    r = requests.post(url, json=CHAT, headers={"Origin": "https://evil.example"}, timeout=30)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "cross_origin_refused"
    r = requests.post(url, data=b'{"x": 1}', headers={"Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 415
    assert r.json()["error"]["message"].startswith("Content-Type must be application/json")
    r = requests.get(server.url + "/v1/models", headers={"Host": "rebound.example"}, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host"
    r = requests.post(url, json=CHAT, headers={"Origin": own}, timeout=60)
    assert r.status_code == 200, r.text
    assert requests.get(server.url + "/", timeout=30).status_code == 200


def test_a_server_with_a_key_leaves_origins_to_the_key(parrot):
    from danlu.infer.launch import start_server
    from danlu.infer.server import ServerOptions

    with start_server(parrot, options=ServerOptions(api_key="sk-k")) as srv:
        url = srv.url + "/v1/chat/completions"
        auth = {"Authorization": "Bearer sk-k", "Origin": "https://my-app.example"}
        r = requests.post(url, json=CHAT, headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        r = requests.post(url, json=CHAT, headers={"Origin": "https://my-app.example"}, timeout=30)
        assert r.status_code == 401
