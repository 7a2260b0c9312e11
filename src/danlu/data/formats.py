"""Record shapes (DESIGN §3 table) -> Conversation, and `format: auto` detection.

Each converter takes one raw record (a dict, column map already applied) and returns a
Conversation or raises BadRecord with the reason it is counted under. Function calls are
normalised to the sharegpt/glaive convention: a `function_call` turn whose content is the JSON
`{"name": ..., "arguments": ...}` (a JSON list of those for several parallel calls).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

from danlu.config.sections import FORMATS
from danlu.data.bad import BadRecord
from danlu.data.turns import check_turns
from danlu.data.types import MODEL_ROLES, Conversation, Message

FORMAT_NAMES = tuple(f for f in get_args(FORMATS) if f != "auto")
"""The record shapes, as the config's `format:` names them (DESIGN §3 table)."""

ROLE_STYLE = {
    "system": "system", "user": "user", "assistant": "assistant",
    "tool": "observation", "observation": "observation",
}  # fmt: skip
SHAREGPT_STYLE = {
    "system": "system", "human": "user", "gpt": "assistant",
    "function_call": "function_call", "observation": "observation",
}  # fmt: skip


def detect_format(record: dict[str, Any]) -> str | None:
    """The format a record looks like, or None. Checked from most to least specific keys."""
    if "chosen" in record and "rejected" in record:
        return "pairwise"
    for key in ("conversations", "messages"):
        turns = record.get(key)
        if isinstance(turns, list) and turns and isinstance(turns[0], dict):
            return "sharegpt" if "from" in turns[0] else key
    if "instruction" in record:
        return "alpaca"
    if "prompt" in record and "response" in record:
        return "prompt_response"
    if "text" in record:
        return "text"
    if "prompt" in record:  # prompt-only (grpo): TRL's and open-r1's shape, extra columns kept
        return "prompt"
    return None


@dataclass(frozen=True)
class RecordRules:
    """What a stage asks of every record beyond its format (DESIGN §9)."""

    prompt_only: bool = False
    """grpo: the record is a prompt the model answers; an answer in it is an error."""
    label: str | None = None
    """kto: the column holding the record's good (true) / bad (false) label."""


NO_RULES = RecordRules()


def to_conversation(
    record: Any, fmt: str, source: str, rules: RecordRules = NO_RULES
) -> Conversation:
    """Convert one raw record of format `fmt`; raise BadRecord when it cannot be used."""
    if not isinstance(record, dict):
        raise BadRecord("not an object", f"record must be a JSON object, got {_kind(record)}")
    if rules.prompt_only and fmt not in ("text", "pairwise"):
        return _prompt_only(record, fmt, source)
    conv = CONVERTERS[fmt](record, source)
    if fmt not in ("text", "pairwise"):
        check_turns(conv.messages, first_turn=1)
    if rules.label is not None:
        conv.meta["kto_label"] = _label(record, rules.label)
        if conv.messages and conv.messages[-1].role not in MODEL_ROLES:
            raise BadRecord(
                "no labelled answer", "the last turn must be the labelled assistant answer"
            )
    return conv


_TRUE, _FALSE = ("true", "1", "yes", "good"), ("false", "0", "no", "bad")


def _label(record: dict, name: str) -> bool:
    value = record.get(name)
    if value is None:
        raise BadRecord(
            "missing kto label",
            f"missing field '{name}': stage kto needs every answer labelled good (true) or bad "
            "(false) (kto_tag: names the column)",
        )
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
        return value.strip().lower() in _TRUE
    raise BadRecord("wrong type", f"field '{name}' must be true or false, got {value!r}")


_OWN_FIELDS = {
    "alpaca": ("instruction", "input", "output", "system", "history"),
    "prompt_response": ("prompt", "response", "system", "history"),
    "prompt": ("prompt", "system", "history"),
}
_CHAT_FIELDS = ("conversations", "messages", "tools", "system")


def _prompt_only(record: dict, fmt: str, source: str) -> Conversation:
    """grpo: the prompt turns, the record's own prompt (for reward functions: the string of a
    plain `prompt` record, else the turns as {role, content}) and its other columns."""
    answer = {"alpaca": "output", "prompt_response": "response"}.get(fmt)
    if answer and str(record.get(answer) or "").strip():
        raise BadRecord("has an answer", f"field '{answer}' holds an answer; {_PROMPTS_ONLY}")
    if fmt == "prompt" and isinstance(record.get("prompt"), list):  # TRL's conversational
        turns = parse_turns({"messages": record["prompt"]}, "messages")
    elif fmt in _OWN_FIELDS:
        turns = _prompt_turns(record, fmt)
    else:
        turns = parse_turns(record, fmt)
    if turns[-1].role in MODEL_ROLES:
        raise BadRecord(
            "has an answer", f"the last turn (turn {len(turns)}) is an answer; {_PROMPTS_ONLY}"
        )
    check_turns(turns, first_turn=1, need_model=False)
    own = _OWN_FIELDS.get(fmt, _CHAT_FIELDS)
    raw_prompt = record.get("prompt") if fmt == "prompt" else None
    conv = Conversation(turns, source, tools=_tools(record) if fmt not in _OWN_FIELDS else None)
    conv.meta["prompt"] = raw_prompt or [{"role": m.role, "content": m.content} for m in turns]
    conv.meta["columns"] = {k: v for k, v in record.items() if k not in own}
    return conv


_PROMPTS_ONLY = "stage grpo records are prompts only (the model writes the answers)"


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _field(record: dict, name: str, fmt: str, required: bool = True) -> str:
    value = record.get(name)
    if value is None:
        if required:
            raise BadRecord("missing field", f"missing field '{name}' (format {fmt})")
        return ""
    if not isinstance(value, str):
        raise BadRecord("wrong type", f"field '{name}' must be a string, got {_kind(value)}")
    return value


def _history(record: dict) -> list[Message]:
    history = record.get("history") or []
    pairs = isinstance(history, list) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(s, str) for s in p)
        for p in history
    )
    if not pairs:
        raise BadRecord("wrong type", "field 'history' must be a list of [query, answer] pairs")
    out = []
    for query, answer in history:
        out += [Message("user", query), Message("assistant", answer)]
    return out


def _answer(record: dict, name: str, fmt: str) -> Message:
    text = _field(record, name, fmt)
    if not text.strip():
        raise BadRecord("empty assistant content", f"empty assistant content (field '{name}')")
    return Message("assistant", text)


def _prompt_turns(record: dict, fmt: str) -> list[Message]:
    """System + history + the user turn of an alpaca or prompt_response record."""
    if fmt == "alpaca" or "instruction" in record:
        instruction = _field(record, "instruction", fmt)
        extra = _field(record, "input", fmt, required=False)
        query = f"{instruction}\n{extra}" if instruction and extra else instruction or extra
    else:
        query = _field(record, "prompt", fmt)
    system = _field(record, "system", fmt, required=False)
    head = [Message("system", system)] if system else []
    return [*head, *_history(record), Message("user", query)]


def _alpaca(record: dict, source: str) -> Conversation:
    turns = _prompt_turns(record, "alpaca")
    return Conversation([*turns, _answer(record, "output", "alpaca")], source)


def _prompt_response(record: dict, source: str) -> Conversation:
    turns = _prompt_turns(record, "prompt_response")
    return Conversation([*turns, _answer(record, "response", "prompt_response")], source)


def _text(record: dict, source: str) -> Conversation:
    text = _field(record, "text", "text")
    if not text.strip():
        raise BadRecord("empty text", "empty text")
    return Conversation([], source, text=text)


def _turns_key(record: dict, fmt: str) -> str:
    for key in (
        ("conversations", "messages") if fmt != "messages" else ("messages", "conversations")
    ):
        if key in record:
            return key
    raise BadRecord(
        "missing field",
        f"missing field '{'messages' if fmt == 'messages' else 'conversations'}' (format {fmt})",
    )


def parse_turns(record: dict, fmt: str) -> list[Message]:
    """The turn list of a conversations/messages/sharegpt record, roles normalised."""
    key = _turns_key(record, fmt)
    turns = record[key]
    if not isinstance(turns, list) or not turns:
        raise BadRecord("wrong type", f"field '{key}' must be a non-empty list of turns")
    sharegpt = fmt == "sharegpt" or (isinstance(turns[0], dict) and "from" in turns[0])
    parse = _sharegpt_turn if sharegpt else _role_turn
    out = [parse(turn, i) for i, turn in enumerate(turns, 1)]
    for i, msg in enumerate(out[1:], 2):
        if msg.role == "system":
            raise BadRecord("misplaced system turn", f"system turn {i} must be the first turn")
    return out


def _turn_keys(turn: Any, i: int, role_key: str, content_key: str) -> tuple[str, Any]:
    if not isinstance(turn, dict):
        raise BadRecord("wrong type", f"turn {i} must be an object, got {_kind(turn)}")
    if role_key not in turn:
        raise BadRecord("missing field", f"missing field '{role_key}' in turn {i}")
    return str(turn[role_key]), turn.get(content_key)


def _sharegpt_turn(turn: Any, i: int) -> Message:
    role, content = _turn_keys(turn, i, "from", "value")
    if role not in SHAREGPT_STYLE:
        raise _unknown_role(role, i, SHAREGPT_STYLE)
    return Message(SHAREGPT_STYLE[role], _content(content, i))


def _role_turn(turn: Any, i: int) -> Message:
    role, content = _turn_keys(turn, i, "role", "content")
    if role not in ROLE_STYLE:
        raise _unknown_role(role, i, ROLE_STYLE)
    if role == "assistant" and turn.get("tool_calls"):
        return Message("function_call", _openai_calls(turn["tool_calls"], i))
    if role == "assistant" and turn.get("metadata"):  # ChatGLM3: metadata = the tool's name
        call = {"name": str(turn["metadata"]).strip(), "arguments": _content(content, i).strip()}
        return Message("function_call", json.dumps(call, ensure_ascii=False))
    return Message(ROLE_STYLE[role], _content(content, i))


def _unknown_role(role: str, i: int, allowed: dict[str, str]) -> BadRecord:
    return BadRecord(
        "unknown role", f"unknown role '{role}' in turn {i} (expected {', '.join(allowed)})"
    )


def _content(content: Any, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise BadRecord("wrong type", f"content of turn {i} must be a string, got {_kind(content)}")


def _openai_calls(calls: Any, i: int) -> str:
    if not isinstance(calls, list):
        raise BadRecord("wrong type", f"tool_calls of turn {i} must be a list")
    out = []
    for call in calls:
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or "name" not in fn:
            raise BadRecord("wrong type", f"tool_calls of turn {i} need function.name")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            # a string that is not JSON is kept: some producers write free-form arguments
            with contextlib.suppress(json.JSONDecodeError):
                args = json.loads(args)
        out.append({"name": fn["name"], "arguments": args})
    return json.dumps(out[0] if len(out) == 1 else out, ensure_ascii=False)


def _tools(record: dict) -> Any:
    tools = record.get("tools")
    if isinstance(tools, str):
        if not tools.strip():
            return None
        try:
            return json.loads(tools)
        except json.JSONDecodeError:
            return tools
    return tools or None


def _chat(fmt: str) -> Callable[[dict, str], Conversation]:
    def convert(record: dict, source: str) -> Conversation:
        return Conversation(parse_turns(record, fmt), source, tools=_tools(record))

    return convert


def _pairwise(record: dict, source: str) -> Conversation:
    if "conversations" in record or "messages" in record:
        prompt = parse_turns(record, "pairwise")
    else:
        prompt = _prompt_turns(record, "pairwise")
    if prompt[-1].role in MODEL_ROLES:
        raise BadRecord(
            "prompt ends with a model turn", "the prompt must end with a user or observation turn"
        )
    check_turns(prompt, first_turn=1, need_model=False)
    chosen, rejected = _choice(record, "chosen"), _choice(record, "rejected")
    if chosen.content.strip() == rejected.content.strip():
        raise BadRecord(
            "chosen equals rejected", "chosen and rejected are the same answer: nothing to prefer"
        )
    return Conversation(prompt, source, tools=_tools(record), chosen=chosen, rejected=rejected)


def _choice(record: dict, name: str) -> Message:
    value = record.get(name)
    if isinstance(value, dict):  # {"from": "gpt", "value"} or {"role": "assistant", "content"}
        value = value.get("value", value.get("content"))
    if value is None:
        raise BadRecord("missing field", f"missing field '{name}' (format pairwise)")
    if not isinstance(value, str):
        raise BadRecord("wrong type", f"field '{name}' must be a string, got {_kind(value)}")
    if not value.strip():
        raise BadRecord("empty assistant content", f"empty assistant content (field '{name}')")
    return Message("assistant", value)


CONVERTERS: dict[str, Callable[[dict, str], Conversation]] = {
    "alpaca": _alpaca,
    "prompt_response": _prompt_response,
    "conversations": _chat("conversations"),
    "messages": _chat("messages"),
    "sharegpt": _chat("sharegpt"),
    "text": _text,
    "pairwise": _pairwise,
    "prompt": lambda record, source: Conversation(_prompt_turns(record, "prompt"), source),
}
