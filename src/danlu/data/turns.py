"""The order of turns every chat template relies on, checked on each conversation."""

from __future__ import annotations

from danlu.data.bad import BadRecord
from danlu.data.types import MODEL_ROLES, Message

# What may follow each role. Conversations alternate between the user's side (a question, or a
# tool's result) and the model's side (an answer, or a tool call), starting with the user after
# an optional system turn: the rule chat templates assume and LLaMA-Factory applies to sharegpt
# data (its glaive demo has answers followed by a tool result, so that stays valid). Several tool
# results may follow one another (one turn of parallel calls).
_NEXT = {
    "system": ("user",),
    "user": ("assistant", "function_call"),
    "assistant": ("user", "observation"),
    "function_call": ("user", "observation"),
    "observation": ("assistant", "function_call", "observation"),
}


def check_turns(messages: list[Message], first_turn: int, need_model: bool = True) -> None:
    """The turn rules every template relies on: model turns non-empty, roles in order
    (`_NEXT`), and at least one model turn."""
    prev = None
    for i, msg in enumerate(messages, first_turn):
        if msg.role in MODEL_ROLES and not msg.content.strip():
            raise BadRecord("empty assistant content", f"empty assistant content in turn {i}")
        _check_order(prev, msg.role, i)
        prev = msg.role
    if need_model and not any(m.role in MODEL_ROLES for m in messages):
        raise BadRecord("no assistant turn", "no assistant turn")


def _check_order(prev: str | None, role: str, i: int) -> None:
    if prev in (None, "system"):
        if role != "user" and not (prev is None and role == "system"):
            raise BadRecord(
                "starts with a model turn" if role in MODEL_ROLES else "roles out of order",
                f"turn {i} is {_a(role)} turn; a conversation starts with a user turn "
                "(after an optional system turn)",
            )
        return
    if role in _NEXT[prev]:
        return
    if role == prev and role in MODEL_ROLES:
        raise BadRecord(
            "consecutive model turns",
            f"two consecutive {role} turns (turns {i - 1} and {i}); the template cannot express them",
        )
    if role == prev:
        raise BadRecord(
            "consecutive user turns",
            f"two consecutive {role} turns (turns {i - 1} and {i}); merge them or put the "
            "answer between them",
        )
    raise BadRecord(
        "roles out of order",
        f"{_a(role)} turn (turn {i}) cannot follow {_a(prev)} turn (turn {i - 1}); expected "
        f"{' or '.join(_NEXT[prev])}",
    )


def _a(role: str) -> str:
    return f"{'an' if role[0] in 'ao' else 'a'} {role}"  # an assistant, an observation, a user
