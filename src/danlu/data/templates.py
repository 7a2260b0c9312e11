"""Chat templates: which one to use (`template:`), and rendering our Conversation through it.

Rendering always goes through `tokenizer.apply_chat_template(..., tokenize=False)` with the
template's Jinja source, so that our text is exactly what transformers (and so inference) renders.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from danlu.data.templates_builtin import BUILTIN
from danlu.data.types import Conversation, Message
from danlu.utils.errors import UsageError

SENTINEL = "\ue000"
"""A private-use character no real text contains: stands in for a turn's content in probes."""


@dataclass
class Template:
    """A named Jinja chat template."""

    name: str
    source: str
    supports_tools: bool = False
    """Whether the template renders `tool_calls` itself (else calls are rendered as plain text)."""
    _closers: dict[int, tuple[Any, str]] = field(default_factory=dict, repr=False, compare=False)
    """id(tokenizer) -> (tokenizer, closer); holding the tokenizer keeps its id from being reused."""

    def render(
        self,
        tokenizer: Any,
        messages: list[dict],
        tools: Any = None,
        generation_prompt: bool = False,
    ) -> str:
        """The template's text for HF-style `messages` (see `to_hf_messages`)."""
        try:
            return tokenizer.apply_chat_template(
                messages,
                tools=tools or None,
                chat_template=self.source,
                tokenize=False,
                add_generation_prompt=generation_prompt,
            )
        except Exception as exc:  # jinja2 errors and templates' raise_exception()
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(
                f"template '{self.name}' cannot render this conversation: {reason}"
            ) from exc

    def closer(self, tokenizer: Any) -> str:
        """The end-of-turn text that closes an assistant turn (e.g. `<|im_end|>`), '' if none.

        Found by probing: the text after an assistant turn when it ends the conversation, and
        when a user turn follows; their common start, cut at the first line break, is the closer.
        The newline scaffolding after it is not part of it (not produced by the model).
        """
        key = id(tokenizer)
        if key not in self._closers:
            self._closers[key] = (tokenizer, self._probe_closer(tokenizer))
        return self._closers[key][1]

    def closer_id(self, tokenizer: Any) -> int | None:
        """The closer as the one token a model emits to end its turn; None when the template
        has no closer or it is several tokens (then only EOS ends an answer)."""
        text = self.closer(tokenizer).strip()
        ids = tokenizer.encode(text, add_special_tokens=False) if text else []
        return int(ids[0]) if len(ids) == 1 else None

    def _probe_closer(self, tokenizer: Any) -> str:
        user = {"role": "user", "content": "u"}
        reply = {"role": "assistant", "content": SENTINEL}
        last = self.render(tokenizer, [user, reply]).split(SENTINEL, 1)[1]
        mid = self.render(tokenizer, [user, reply, {"role": "user", "content": SENTINEL}])
        mid = mid.split(SENTINEL)[1]
        common = _snap_to_tokens(tokenizer, last, len(_common_prefix(last, mid)))
        match = re.match(r"\s*[^\n]*", common)
        return match.group(0).rstrip() if match else ""


def eos_ids(tokenizer: Any, generation_config: Any = None) -> frozenset[int]:
    """End-of-text ids: the generation config's (often several: Llama 3 lists three, Qwen2.5
    two) and the tokenizer's."""
    ids: set[int] = set()
    value = getattr(generation_config, "eos_token_id", None)
    if isinstance(value, int):
        ids.add(value)
    elif isinstance(value, (list, tuple)):
        ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def stop_ids(
    tokenizer: Any, template: Template | None = None, generation_config: Any = None
) -> frozenset[int]:
    """What ends a chat answer: the end-of-text ids and the template's end-of-turn token
    (<|im_end|>, <|eot_id|>) -- the same for danlu's chat, server, eval and grpo."""
    closer = template.closer_id(tokenizer) if template is not None else None
    return eos_ids(tokenizer, generation_config) | ({closer} if closer is not None else set())


def get_template(spec: str, tokenizer: Any) -> Template:
    """`template:` value -> Template: `auto`, a built-in name, or a path to a Jinja file."""
    if spec == "auto":
        source = getattr(tokenizer, "chat_template", None)
        if isinstance(source, dict):  # several named templates: the default one is the chat one
            source = source.get("default")
        if not source:
            raise UsageError(
                "template: auto, but the tokenizer has no chat_template; set template: to one of "
                f"{', '.join(BUILTIN)} or a .jinja file"
            )
        return Template("auto", source, _mentions_tools(source))
    if spec in BUILTIN:
        return Template(spec, BUILTIN[spec], True)
    path = Path(spec).expanduser()
    if path.is_file():
        return _from_file(path)
    raise UsageError(
        f"template: unknown template '{spec}' (not a file); use auto, {', '.join(BUILTIN)} "
        "or a path to a .jinja file"
    )


def _from_file(path: Path) -> Template:
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"template: cannot read '{path}': {exc}") from exc
    return Template(str(path), source, _mentions_tools(source))


def _mentions_tools(source: str) -> bool:
    return "tool_calls" in source


def to_hf_messages(conv: Conversation | list[Message], template: Template) -> list[dict]:
    """Our messages -> the dicts chat templates expect (tool calls, `tool` role for observations)."""
    messages = conv.messages if isinstance(conv, Conversation) else conv
    return [_hf_message(m, template.supports_tools) for m in messages]


def _hf_message(msg: Message, tools_ok: bool) -> dict:
    if msg.role == "observation":
        return {"role": "tool", "content": msg.content}
    if msg.role != "function_call":
        return {"role": msg.role, "content": msg.content}
    calls = _parse_calls(msg.content) if tools_ok else None
    if calls is None:  # the template cannot express calls (or they are not JSON): plain text
        return {"role": "assistant", "content": msg.content}
    return {"role": "assistant", "content": "", "tool_calls": calls}


def _parse_calls(text: str) -> list[dict] | None:
    """`{"name", "arguments"}` (or a list of them) -> OpenAI-style tool_calls, else None."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    items = data if isinstance(data, list) else [data]
    calls = []
    for item in items:
        if not isinstance(item, dict) or "name" not in item:
            return None
        args = item.get("arguments", item.get("parameters", {}))
        if isinstance(args, str):  # OpenAI sends arguments as a JSON string; templates want a dict
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None
        calls.append({"type": "function", "function": {"name": item["name"], "arguments": args}})
    return calls


def tools_of(conv: Conversation) -> Any:
    """The conversation's tool definitions as a list (they are often stored as a JSON string)."""
    tools = conv.tools
    if isinstance(tools, str):
        try:
            tools = json.loads(tools) if tools.strip() else None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{conv.source}: tools is not valid JSON ({exc.msg})") from exc
    if isinstance(tools, dict):
        tools = [tools]
    return tools or None


def _common_prefix(a: str, b: str) -> str:
    n = 0
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return a[:n]


def _snap_to_tokens(tokenizer: Any, text: str, n: int) -> str:
    """`text[:n]`, shortened to end on a token boundary of `text` (so `<|end|>\\n<|` -> `<|end|>\\n`)."""
    if n >= len(text):
        return text
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ends = [end for _, end in enc["offset_mapping"] if end <= n]
    return text[: max(ends, default=0)]
