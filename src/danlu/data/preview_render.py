"""Decoded text with the trained tokens highlighted, for `danlu data preview`."""

from __future__ import annotations

from itertools import groupby
from typing import Any

IGNORE = -100
_ON, _OFF = "\x1b[1;32m", "\x1b[0m"  # bold green: the tokens the loss is computed on


def render_spans(input_ids: list[int], labels: list[int], tokenizer: Any, color: bool) -> str:
    """The sample's text; trained runs in green (color) or between `[[` and `]]` (plain)."""
    parts = []
    pairs = zip(input_ids, labels, strict=True)
    for trained, run in groupby(pairs, key=lambda pair: pair[1] != IGNORE):
        text = tokenizer.decode([tok for tok, _ in run], skip_special_tokens=False)
        if trained:
            text = f"{_ON}{text}{_OFF}" if color else f"[[{text}]]"
        parts.append(text)
    return "".join(parts)
