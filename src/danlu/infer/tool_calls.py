"""A model's tool-call text -> OpenAI `tool_calls`, per template family, whole or streamed.

Each family writes calls the way its chat template renders them in the training data, so the
parser is the template's inverse (tests render calls with each template and parse them back):
- `hermes` (Qwen2.5, Hermes, ChatML; danlu's chatml/qwen): `<tool_call>\\n{"name": ...,
  "arguments": {...}}\\n</tool_call>`, one block per call;
- `glm45` (GLM-4.5/4.6): `<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>...
  </tool_call>`;
- `json` (Llama 3.x; danlu's llama3): the answer is one JSON object `{"name", "parameters"}` (or
  `"arguments"`), after an optional `<|python_tag|>`; several are separated by `;`;
- `glm` (ChatGLM3 / GLM-4 chat; danlu's chatglm3): the first line is the function's name, the
  rest its JSON arguments.
A call is only a call when it names one of the request's tools and its arguments are a JSON
object; anything else stays content, so a model that writes a malformed call gets its text
back, never a 500.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from danlu.infer.text import partial_suffix

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_GLM45_ARGS = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)
PYTHON_TAG = "<|python_tag|>"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def as_json(self, index: int | None = None) -> dict[str, Any]:
        """OpenAI's shape: arguments as a JSON string, a fresh call id."""
        out: dict[str, Any] = {
            "id": "call_" + uuid.uuid4().hex[:24],
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }  # fmt: skip
        return out if index is None else {"index": index, **out}


def family_of(template: str) -> str:
    """The tool-call family a chat template's source writes."""
    if "<arg_key>" in template:
        return "glm45"
    if "<tool_call>" in template:
        return "hermes"
    if "observation" in template:
        return "glm"
    if "ipython" in template or PYTHON_TAG in template or "<|start_header_id|>" in template:
        return "json"
    return "hermes"


def lead(family: str, name: str | None, tools: list[str]) -> str | None:
    """The opening of a call in `family`'s form, written into the prompt after the generation
    prompt when the request forces a call (`tool_choice` naming `name`, or `required`: name
    None), so the model can only continue a call; None when the family cannot open a call
    without its name and several tools could be meant."""
    if name is None and family == "glm" and len(tools) == 1:
        name = tools[0]
    # Each opening ends just before a space: byte-level BPE attaches a space to the word after
    # it, so the model's next token (` "get_weather"`, ` {"city"`) is one it saw in training.
    if family == "hermes":
        return '<tool_call>\n{"name":' + (f' "{name}", "arguments":' if name else "")
    if family == "json":
        return '{"name":' + (f' "{name}", "parameters":' if name else "")
    if family == "glm45":
        return "<tool_call>" + (f"{name}\n" if name else "")
    return f"{name}\n" if name else None


def parse(text: str, family: str, names: set[str]) -> tuple[str | None, list[ToolCall]]:
    """(the content left, the calls) of a whole answer; no calls -> (text, [])."""
    parser = {"hermes": _hermes, "glm45": _glm45, "json": _json, "glm": _glm}[family]
    content, calls = parser(text, names)
    if not calls:
        return text, []
    return (content.strip() or None), calls


def _call(name: Any, arguments: Any, names: set[str]) -> ToolCall | None:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if arguments is None:
        arguments = {}
    if not isinstance(name, str) or name not in names or not isinstance(arguments, dict):
        return None
    return ToolCall(name, arguments)


def _object(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _hermes(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    calls = []
    for block in _HERMES.findall(text):
        obj = _object(block)
        call = (
            _call(obj.get("name"), obj.get("arguments"), names) if isinstance(obj, dict) else None
        )
        if call is None:
            return text, []  # one bad block: the whole answer is text
        calls.append(call)
    return _HERMES.sub("", text), calls


def _glm45(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    calls = []
    for block in _HERMES.findall(text):
        name, _, rest = block.partition("\n")
        args = {k.strip(): _value(v) for k, v in _GLM45_ARGS.findall(rest)}
        call = _call(name.strip(), args, names)
        if call is None:
            return text, []
        calls.append(call)
    return _HERMES.sub("", text), calls


def _value(raw: str) -> Any:
    """GLM-4.5 writes strings bare and other values as JSON."""
    value = _object(raw.strip())
    return raw if value is None else value


def _json(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    body = text.strip()
    body = body[len(PYTHON_TAG) :].strip() if body.startswith(PYTHON_TAG) else body
    if not body.startswith("{"):
        return text, []
    calls = []
    for part in _json_parts(body):
        obj = _object(part)
        if not isinstance(obj, dict):
            return text, []
        call = _call(obj.get("name"), obj.get("parameters", obj.get("arguments")), names)
        if call is None:
            return text, []
        calls.append(call)
    return "", calls


def _json_parts(body: str) -> list[str]:
    """`{...}; {...}` -> the objects' texts (a `;` inside a string is not a separator)."""
    decoder, parts, at = json.JSONDecoder(), [], 0
    while at < len(body):
        try:
            _, end = decoder.raw_decode(body, at)
        except json.JSONDecodeError:
            return [body]
        parts.append(body[at:end])
        at = end
        while at < len(body) and body[at] in " \n\t;":
            at += 1
    return parts


def _glm(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    name, _, rest = text.strip().partition("\n")
    call = _call(name.strip(), rest.strip() or "{}", names)
    return ("", [call]) if call is not None else (text, [])


class ToolCallStream:
    """Streams an answer's content until it may be a tool call, then holds the rest; at the end
    the held text is parsed: calls, or content after all."""

    def __init__(self, family: str, names: set[str]) -> None:
        self.family, self.names = family, names
        self.seen = ""
        self.sent = 0
        self.holding = False
        self.decided = False

    def feed(self, piece: str) -> str:
        """Content that can be sent now."""
        self.seen += piece
        if self.holding:
            return ""
        if self.family in ("hermes", "glm45"):
            return self._until_marker()
        return self._decide_at_start()

    def _until_marker(self) -> str:
        at = self.seen.find("<tool_call>", self.sent)
        if at >= 0:
            self.holding = True
            return self._send(at)
        keep = partial_suffix(self.seen, "<tool_call>")
        return self._send(len(self.seen) - keep)

    def _decide_at_start(self) -> str:
        """json / glm calls are the whole answer: hold until its start tells."""
        if not self.decided:
            head = self.seen.lstrip()
            if self.family == "json":
                if len(head) < len(PYTHON_TAG) and PYTHON_TAG.startswith(head):
                    return ""  # nothing yet, or the start of <|python_tag|>
                self.holding = head.startswith(("{", PYTHON_TAG))
            else:
                if "\n" not in head and len(head) < 64:
                    return ""
                self.holding = head.partition("\n")[0].strip() in self.names
            self.decided = True
            if self.holding:
                return ""
        return self._send(len(self.seen))

    def _send(self, upto: int) -> str:
        out, self.sent = self.seen[self.sent : upto], max(self.sent, upto)
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(content not yet sent, calls) at the end of the answer."""
        held = self.seen[self.sent :]
        self.sent = len(self.seen)
        if not self.holding:
            return held, []
        content, calls = parse(held, self.family, self.names)
        return (content or ""), calls
