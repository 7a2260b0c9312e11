"""A chat answer's text -> the OpenAI message: `reasoning_content`, `content`, `tool_calls`.

The same rules whole (`message`) and streamed (`AnswerStream`, one per choice): reasoning is
split off first (danlu.infer.reasoning), then what remains is checked for tool calls
(danlu.infer.tool_calls) when the request gave tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from danlu.infer.reasoning import ReasoningSplitter, split_reasoning
from danlu.infer.tool_calls import ToolCallStream, parse


@dataclass(frozen=True)
class AnswerRules:
    """How a request's answers are read (set when the request is parsed)."""

    reasoning: bool = False
    """Split `<think>...</think>` into reasoning_content."""
    opened: bool = False
    """The prompt already opened `<think>` (the answer starts inside it)."""
    tool_family: str | None = None
    """danlu.infer.tool_calls family; None: the request gave no tools."""
    tool_names: frozenset[str] = field(default_factory=frozenset)
    lead: str = ""
    """A forced call's opening, written in the prompt: the answer continues it (and, starting
    with a call, has no reasoning: `reasoning` is False then)."""


def message(rules: AnswerRules, text: str, finish: str | None) -> tuple[dict[str, Any], str | None]:
    """(the assistant message, the finish_reason: 'tool_calls' when it calls tools)."""
    out: dict[str, Any] = {"role": "assistant"}
    content: str | None = rules.lead + text  # a forced call: the rest of the call the prompt opened
    if rules.reasoning:
        reasoning, content = split_reasoning(content, rules.opened)
        if reasoning is not None:
            out["reasoning_content"] = reasoning
    calls = []
    if rules.tool_family is not None:
        content, calls = parse(content, rules.tool_family, set(rules.tool_names))
    out["content"] = content
    if calls:
        out["tool_calls"] = [c.as_json() for c in calls]
        return out, "tool_calls"
    return out, finish


class AnswerStream:
    """One choice's stream: text pieces in, delta dicts out."""

    def __init__(self, rules: AnswerRules) -> None:
        self.splitter = ReasoningSplitter(rules.opened) if rules.reasoning else None
        self.tools = (
            ToolCallStream(rules.tool_family, set(rules.tool_names))
            if rules.tool_family is not None
            else None
        )
        if self.tools is not None and rules.lead:
            self.tools.feed(rules.lead)  # the call's opening: held, as the start of a call is

    def feed(self, piece: str) -> dict[str, Any]:
        reasoning, content = self.splitter.feed(piece) if self.splitter else ("", piece)
        return self._delta(reasoning, content)

    def _delta(self, reasoning: str, content: str) -> dict[str, Any]:
        if self.tools is not None:
            content = self.tools.feed(content)
        delta: dict[str, Any] = {}
        if reasoning:
            delta["reasoning_content"] = reasoning
        if content:
            delta["content"] = content
        return delta

    def finish(self, piece: str, finish: str | None) -> tuple[dict[str, Any], str | None]:
        """The last delta (the final piece and everything held back) and the finish_reason."""
        delta = self.feed(piece)
        if self.splitter is not None:
            more = self._delta(*self.splitter.finish())
            for key, text in more.items():
                delta[key] = delta.get(key, "") + text
        if self.tools is None:
            return delta, finish
        content, calls = self.tools.finish()
        if content:
            delta["content"] = delta.get("content", "") + content
        if not calls:
            return delta, finish
        delta["tool_calls"] = [c.as_json(i) for i, c in enumerate(calls)]
        return delta, "tool_calls"
