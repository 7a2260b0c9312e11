"""`<think>...</think>` in a model's answer -> OpenAI-style `reasoning_content` apart from
`content`, whole or as it streams.

Reasoning models (DeepSeek-R1, Qwen3, QwQ, and what danlu trains on `<think>` data) write their
reasoning first, between the tags. Some chat templates open the `<think>` in the generation
prompt, so the answer starts inside the reasoning and only `</think>` appears: `opened` says so
(found by looking at the end of the rendered prompt). A `<think>` that does not open the answer
is content, as is everything after `</think>`.
"""

from __future__ import annotations

from danlu.infer.text import partial_suffix

OPEN, CLOSE = "<think>", "</think>"


def opens_thinking(prompt_text: str) -> bool:
    """Whether the rendered prompt ends inside an open `<think>` (the template opened it)."""
    tail = prompt_text.rstrip()
    return tail.endswith(OPEN)


class ReasoningSplitter:
    """Feeds text pieces, returns (reasoning, content) deltas; a tag split across two pieces is
    held back until it is whole, so no client ever sees half a tag."""

    def __init__(self, opened: bool = False) -> None:
        self.state = "reasoning" if opened else "start"
        self.held = ""
        self.thought = opened
        """Whether the answer had a reasoning part."""
        self._trim = False  # the blank lines after </think> are not content

    def feed(self, piece: str) -> tuple[str, str]:
        text, self.held = self.held + piece, ""
        if self.state == "start":
            text = self._start(text)
        if self.state == "content":
            return "", self._content(text)
        if self.state != "reasoning":
            return "", ""
        at = text.find(CLOSE)
        if at >= 0:
            self.state, self._trim = "content", True
            return text[:at], self._content(text[at + len(CLOSE) :])
        keep = partial_suffix(text, CLOSE)
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep], ""

    def _start(self, text: str) -> str:
        """Reasoning only opens at the very start of an answer (after whitespace)."""
        stripped = text.lstrip()
        if stripped.startswith(OPEN):
            self.state, self.thought = "reasoning", True
            return stripped[len(OPEN) :]
        if OPEN.startswith(stripped):  # nothing yet, or part of the tag: wait for more
            self.held = text
            return ""
        self.state = "content"
        return text

    def _content(self, text: str) -> str:
        if self._trim:
            text = text.lstrip()
            self._trim = not text
        return text

    def finish(self) -> tuple[str, str]:
        """What is held back at the end (an unfinished tag is text after all)."""
        held, self.held = self.held, ""
        return (held, "") if self.state == "reasoning" else ("", held)


def split_reasoning(text: str, opened: bool = False) -> tuple[str | None, str]:
    """(reasoning, or None when the answer had none; content) of a whole answer."""
    splitter = ReasoningSplitter(opened)
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.finish()
    return ((r1 + r2).strip() if splitter.thought else None), c1 + c2
