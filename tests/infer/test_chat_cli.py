"""`danlu chat` and `danlu serve` on the command line: one-shot answers, the interactive loop
(/clear, /exit, stop, Ctrl-C stopping only the answer), flag validation; real processes with
real signals are in the slow tests at the end."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from tests.infer.helpers import CHATTER_TOKEN, PARROT_QUESTION, PARROT_REPLY

from danlu.cli import main
from danlu.infer.chat import ChatSession
from danlu.infer.params import GenParams


def test_one_shot_question(parrot_dir, capsys):
    code = main(
        [
            "chat",
            "--model",
            str(parrot_dir),
            "--device",
            "cpu",
            "-q",
            PARROT_QUESTION,
            "--temperature",
            "0",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == f"Assistant: {PARROT_REPLY}\n"


def test_bad_generation_flags_are_usage_errors(parrot_dir, capsys):
    assert main(["chat", "--model", str(parrot_dir), "-q", "x", "--temperature", "5"]) == 2
    assert "--temperature: temperature must be in [0, 2], got 5" in capsys.readouterr().err
    assert main(["chat", "--model", str(parrot_dir), "-q", "x", "--top-p", "0"]) == 2
    assert "--top-p: top_p must be in (0, 1], got 0" in capsys.readouterr().err
    assert main(["chat", "--model", str(parrot_dir), "-q", "x", "--devices", "gpu0"]) == 2
    assert "--devices 'gpu0': expected GPU indices like 0 or 0,1" in capsys.readouterr().err


def _script(lines):
    """A `read` for the loop that plays `lines` (str, or an exception to raise)."""
    feed = iter(lines)

    def read(prompt: str) -> str:
        item = next(feed)
        if isinstance(item, BaseException):
            raise item
        return item

    return read


def test_loop_clear_and_quit_words(parrot):
    session = ChatSession(parrot, GenParams(max_new_tokens=60, temperature=0))
    out: list[str] = []
    read = _script(
        [
            PARROT_QUESTION,
            "  ",
            "/clear",
            KeyboardInterrupt(),
            PARROT_QUESTION,
            "stop",
            "never read",
        ]
    )
    from danlu.cli.chat import loop

    assert loop(session, read, out.append) == 0
    text = "".join(out)
    assert text.count(f"Assistant: {PARROT_REPLY}\n") == 2
    assert "(conversation cleared)" in text and "(/exit or Ctrl-D to quit)" in text
    assert [m["role"] for m in session.history] == ["user", "assistant"]  # cleared in between
    for word in ("/exit", "/quit", "exit"):
        assert loop(session, _script([word]), out.append) == 0
    assert loop(session, _script([EOFError()]), out.append) == 0


def test_ctrl_c_stops_the_answer_not_the_program(parrot):
    from danlu.cli.chat import loop

    session = ChatSession(parrot, GenParams(max_new_tokens=60, temperature=0))
    out: list[str] = []
    pieces = 0

    def write(text: str) -> None:
        nonlocal pieces
        out.append(text)
        if out[-2:-1] == ["Assistant: "] or pieces:
            pieces += 1
            if pieces == 3:
                raise KeyboardInterrupt  # as if Ctrl-C arrived while printing the 3rd piece

    assert loop(session, _script([PARROT_QUESTION, PARROT_QUESTION, "/exit"]), write) == 0
    text = "".join(out)
    assert " [stopped]\n" in text
    first = text.split("Assistant: ")[1].split(" [stopped]")[0]
    assert first and PARROT_REPLY.startswith(first) and first != PARROT_REPLY
    assert session.history[1] == {"role": "assistant", "content": first}  # partial answer kept
    assert len(session.history) == 4  # and the conversation went on
    assert parrot.scheduler.load == (0, 0)


def test_system_prompt_and_context_overflow(parrot):
    session = ChatSession(parrot, GenParams(max_new_tokens=5, temperature=0), system="Be brief.")
    assert session.messages("hi")[0] == {"role": "system", "content": "Be brief."}
    session.history = [{"role": "user", "content": "word " * 300}]
    with pytest.raises(ValueError, match="fills the model's context"):
        list(session.reply("more"))


def test_serve_refuses_bad_options_before_loading(capsys):
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port 70000: must be 0..65535" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--model", "/nonexistent"]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def _default_sigint() -> None:
    """The child starts with SIGINT's default disposition and unblocked, whatever the test
    process holds (both are inherited across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class _Proc:
    """A child process whose stdout is read on a thread, so reads can time out."""

    def __init__(self, args, **kw) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DANLU_API_KEY": ""}
        self.p = subprocess.Popen(
            [sys.executable, "-m", "danlu", *args],
            preexec_fn=_default_sigint,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            **kw,
        )
        self.q: queue.Queue[str] = queue.Queue()
        self.seen = ""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while ch := self.p.stdout.read1(4096).decode("utf-8", "replace"):
            self.q.put(ch)

    def expect(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while not (m := re.search(pattern, self.seen)):
            left = deadline - time.monotonic()
            alive = left > 0 and self.p.poll() is None
            assert alive or not self.q.empty(), f"no {pattern!r} in output: {self.seen[-2000:]!r}"
            with contextlib.suppress(queue.Empty):
                self.seen += self.q.get(timeout=max(left, 0.01))
        return m

    def send(self, line: str) -> None:
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()


@pytest.mark.slow  # a real process (imports torch: ~10 s) and a real SIGINT
def test_real_ctrl_c_in_danlu_chat(chatter_dir):
    # The chatter says CHATTER_TOKEN forever: the answer is still running at the Ctrl-C
    proc = _Proc(
        ["chat", "--model", str(chatter_dir), "--temperature", "0", "--max-new-tokens", "1500"]
    )
    try:
        proc.expect(r"User: ")
        proc.send("hello")
        proc.expect(rf"Assistant: (?:{CHATTER_TOKEN}){{3}}")
        proc.p.send_signal(signal.SIGINT)
        proc.expect(r"\[stopped\]\n\nUser: ", timeout=30)
        assert proc.p.poll() is None  # still running
        proc.send("/exit")
        assert proc.p.wait(30) == 0
    finally:
        proc.p.kill()


@pytest.mark.slow  # a real `danlu serve` process, stopped with SIGINT
def test_real_danlu_serve_process(parrot_dir):
    openai = pytest.importorskip("openai")
    proc = _Proc(
        [
            "serve",
            "--model",
            str(parrot_dir),
            "--device",
            "cpu",
            "--port",
            "0",
            "--api-key",
            "sk-test-key-42",
            "--served-model-name",
            "parrot",
            "--log-level",
            "warning",
        ]
    )
    try:
        url = proc.expect(r"\[serve\] parrot at (http://127\.0\.0\.1:\d+)").group(1)
        proc.expect(r"auth: on")
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-test-key-42", max_retries=0)
        r = client.chat.completions.create(
            model="parrot", messages=[{"role": "user", "content": PARROT_QUESTION}], temperature=0
        )
        assert r.choices[0].message.content == PARROT_REPLY
        assert requests.get(url + "/v1/models", timeout=5).status_code == 401
        proc.p.send_signal(signal.SIGINT)
        assert proc.p.wait(30) == 0
    finally:
        proc.p.kill()


@pytest.mark.slow
def test_real_embedded_model_answers(capsys):
    """The real SmolLM2 through `danlu chat -q` (greedy): it knows 2 + 2."""
    assert main(["chat", "-q", "What is 2+2?", "--temperature", "0", "--max-new-tokens", "24"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Assistant: ") and "4" in out
