"""The chat page in a real browser: headless Chromium (Debian's `chromium` package) driven over
the DevTools protocol loads `/`, sends a message, and sees the answer arrive in pieces.

Skips, saying why, where Chromium is not installed (`apt-get install chromium`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import time

import pytest
from tests.infer.helpers import PARROT_QUESTION, PARROT_REPLY

aiohttp = pytest.importorskip(
    "aiohttp", reason="the DevTools client uses aiohttp (a datasets dependency)"
)

CHROMIUM = (
    os.environ.get("DANLU_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs headless Chromium: apt-get install -y chromium (or set DANLU_CHROMIUM)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


class Page:
    """Just enough DevTools protocol: evaluate JavaScript in one page and wait for conditions."""

    def __init__(self, ws) -> None:
        self.ws, self.ids = ws, itertools.count(1)

    async def call(self, method: str, **params):
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def js(self, expression: str):
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        while True:  # the page may still be loading: an error counts as "not yet"
            value = await self.js(guarded)
            if value:
                return value
            if time.monotonic() > deadline:
                log = await self.js("document.body.innerText")
                raise AssertionError(
                    f"timed out waiting for: {expression}; the page shows: {log!r}"
                )
            await asyncio.sleep(0.05)


@pytest.fixture
def browser(tmp_path):
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = int(m.group(1)) if m else None
        assert port, "Chromium did not start its DevTools endpoint"
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _page(port: int, session) -> Page:
    async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
        targets = await r.json()
    url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    return Page(await session.ws_connect(url, max_msg_size=0))


def _run(coro):
    return asyncio.run(coro)


def test_chat_page_streams_an_answer(browser, server, parrot, monkeypatch):
    decode = parrot.runner.decode
    monkeypatch.setattr(parrot.runner, "decode", lambda b: (time.sleep(0.02), decode(b))[1])

    async def scenario():
        async with aiohttp.ClientSession() as session:
            page = await _page(browser, session)
            await page.call("Page.enable")
            await page.call("Page.navigate", url=server.url + "/")
            await page.until(
                "document.readyState === 'complete' && document.getElementById('model').textContent === 'parrot'"
            )
            # record every text the answer bubble shows, to see it stream
            await page.js(
                """
                window.seen = [];
                new MutationObserver(() => {
                  const b = document.querySelector('.assistant .content');
                  if (b && window.seen[window.seen.length - 1] !== b.textContent) window.seen.push(b.textContent);
                }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
                document.getElementById('temperature').value = '0';
                document.getElementById('input').value = QUESTION;
                document.getElementById('send').click();
            """.replace("QUESTION", json.dumps(PARROT_QUESTION))
            )
            await page.until("document.querySelector('.assistant')?.dataset.state === 'done'")
            seen = await page.js("window.seen")
            answer = await page.js("document.querySelector('.assistant .content').textContent")
            # second turn: the page sends the history with it
            await page.js(
                "document.getElementById('input').value = 'again'; document.getElementById('send').click();"
            )
            await page.until(
                "document.querySelectorAll('.assistant').length === 2 && "
                "document.querySelectorAll('.assistant')[1].dataset.state === 'done'"
            )
            turns = await page.js("turns.length")
            await page.js("document.getElementById('clear').click()")
            cleared = await page.js("[document.querySelectorAll('.msg').length, turns.length]")
            return seen, answer, turns, cleared

    seen, answer, turns, cleared = _run(scenario())
    assert answer == PARROT_REPLY
    partial = [s for s in seen if s and s != PARROT_REPLY]
    assert len(partial) >= 3, f"the answer did not arrive in pieces: {seen}"
    assert all(PARROT_REPLY.startswith(s) and "\ufffd" not in s for s in seen)
    assert turns == 4
    assert cleared == [0, 0]


def test_chat_page_uses_the_api_key_field(browser, parrot):
    from danlu.infer.launch import start_server
    from danlu.infer.server import ServerOptions

    async def scenario(url):
        async with aiohttp.ClientSession() as session:
            page = await _page(browser, session)
            await page.call("Page.navigate", url=url + "/")
            refused = await page.until(
                "(t => t.includes('API key') && t)(document.getElementById('model').textContent)"
            )
            await page.js("""
                const k = document.getElementById('apikey'); k.value = 'sk-page-key-1';
                k.dispatchEvent(new Event('change'));""")
            await page.until("document.getElementById('model').textContent === 'parrot'")
            await page.js(
                "document.getElementById('temperature').value = '0';"
                f"document.getElementById('input').value = {json.dumps(PARROT_QUESTION)};"
                "document.getElementById('send').click();"
            )
            await page.until("document.querySelector('.assistant')?.dataset.state === 'done'")
            return refused, await page.js(
                "document.querySelector('.assistant .content').textContent"
            )

    with start_server(parrot, options=ServerOptions(api_key="sk-page-key-1")) as srv:
        refused, answer = _run(scenario(srv.url))
    assert "didn't provide an API key" in refused
    assert answer == PARROT_REPLY


def test_chat_page_shows_reasoning_apart_from_the_answer(browser, caller_dir):
    """A model that thinks first: the page shows the reasoning_content deltas in their own
    folded block above the answer, and sends only the answer back as history."""
    from tests.infer.helpers import THINK, WHY_Q

    from danlu.config import ModelArgs
    from danlu.infer.engine import Engine, EngineConfig
    from danlu.infer.launch import start_server

    async def scenario(url):
        async with aiohttp.ClientSession() as session:
            page = await _page(browser, session)
            await page.call("Page.navigate", url=url + "/")
            await page.until("document.getElementById('model').textContent === 'caller'")
            await page.js(
                "document.getElementById('temperature').value = '0';"
                f"document.getElementById('input').value = {json.dumps(WHY_Q)};"
                "document.getElementById('send').click();"
            )
            await page.until("document.querySelector('.assistant')?.dataset.state === 'done'")
            return await page.js(
                "(() => { const a = document.querySelector('.assistant');"
                " return [a.querySelector('.thinking')?.textContent,"
                " a.querySelector('.content').textContent,"
                " a.querySelector('details.reasoning')?.open, turns[1].content]; })()"
            )

    config = EngineConfig(max_batch_size=2, batch_wait_ms=0)
    with (
        Engine.load(ModelArgs(model=str(caller_dir), device="cpu"), name="caller",
                    config=config) as engine,
        start_server(engine) as srv,
    ):  # fmt: skip
        thought, answer, still_open, history = _run(scenario(srv.url))
    reasoning, _, reply = THINK.removeprefix("<think>").partition("</think>")
    assert thought == reasoning and answer == reply.strip()
    assert still_open is False  # folded once the answer began
    assert history == answer
