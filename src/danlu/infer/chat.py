"""A multi-turn conversation with an Engine: history, the system prompt, streamed replies.

The terminal chat (`danlu chat`) is a thin loop around this; stopping a reply early (Ctrl-C)
is closing the `reply` iterator, which cancels the request and keeps what was said so far.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from danlu.infer.engine import Engine
from danlu.infer.params import GenParams

QUIT = {"/exit", "/quit", "exit", "quit", "stop"}
"""`stop` quits as in the ChatGLM cli_demo users know; `/exit` as the issue asks."""
CLEAR = {"/clear", "clear"}


class ChatSession:
    def __init__(self, engine: Engine, params: GenParams, system: str | None = None) -> None:
        self.engine, self.params, self.system = engine, params, system
        self.history: list[dict[str, Any]] = []
        self.stopped = False
        """True when the last reply was cut short by the caller."""

    def reset(self) -> None:
        self.history.clear()

    def messages(self, text: str) -> list[dict[str, Any]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.history, {"role": "user", "content": text}]

    def reply(self, text: str) -> Iterator[str]:
        """Stream the answer to `text`; the turn joins the history when the answer ends or
        when the caller stops reading (the partial answer is kept, as chat UIs do)."""
        prompt = self.engine.chat_prompt(self.messages(text))
        params = self.params
        room = self.engine.room(prompt)
        if room < 1:
            raise ValueError(
                f"the conversation ({len(prompt)} tokens) fills the model's context "
                f"({self.engine.context_len}); /clear to start over"
            )
        if params.max_new_tokens > room:
            params = params.with_(max_new_tokens=room)
        stream = self.engine.stream(prompt, params, extra_eos=self.engine.chat_eos)
        answer: list[str] = []
        finished = False
        try:
            for out in stream:
                if out.finish_reason == "error":
                    raise RuntimeError(out.error or "generation failed")
                if out.text:
                    answer.append(out.text)
                    yield out.text
            finished = True
        finally:
            stream.close()
            self.stopped = not finished
            self.history += [
                {"role": "user", "content": text},
                {"role": "assistant", "content": "".join(answer)},
            ]
