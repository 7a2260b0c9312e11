"""Truncation (DESIGN §3): drop whole oldest rounds (system kept), then cap source and target.

`source` is every token before the first trained token, `target` the rest. The source is cut
from the left (the header right before the answer survives), the target from the right (the
start of the answer survives). When a sample still exceeds `cutoff_len`, the target keeps at
least half of it, the source gets the rest.
"""

from __future__ import annotations

from danlu.data.types import Message

IGNORE = -100


def split_rounds(messages: list[Message]) -> tuple[list[Message], list[list[Message]]]:
    """(leading system turns, rounds); a round starts at a user turn and runs to the next one."""
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    rounds: list[list[Message]] = []
    for msg in messages[head:]:
        if msg.role == "user" or not rounds:
            rounds.append([])
        rounds[-1].append(msg)
    return messages[:head], rounds


def cap_lengths(
    ids: list[int],
    labels: list[int],
    cutoff_len: int,
    max_source: int | None,
    max_target: int | None,
) -> tuple[list[int], list[int], bool]:
    """Cut (ids, labels) to the source/target caps and `cutoff_len`; also say whether anything was cut."""
    k = first_trained(labels)
    keep_src, keep_tgt = cap_split(k, len(ids) - k, cutoff_len, max_source, max_target)
    if keep_src == k and keep_tgt == len(ids) - k:
        return ids, labels, False
    lo, hi = k - keep_src, k + keep_tgt
    return ids[lo:hi], labels[lo:hi], True


def cap_split(
    n_src: int, n_tgt: int, cutoff_len: int, max_source: int | None, max_target: int | None
) -> tuple[int, int]:
    """How many source and target tokens to keep."""
    keep_src = min(n_src, max_source or n_src)
    keep_tgt = min(n_tgt, max_target or n_tgt)
    if keep_src + keep_tgt > cutoff_len:
        keep_tgt = min(keep_tgt, max(cutoff_len - keep_src, cutoff_len // 2))
        keep_src = min(keep_src, cutoff_len - keep_tgt)
    return keep_src, keep_tgt


def first_trained(labels: list[int]) -> int:
    """Index of the first trained token (len(labels) if none): where the source ends."""
    return next((i for i, lab in enumerate(labels) if lab != IGNORE), len(labels))


def has_trained(labels: list[int]) -> bool:
    """A label at position 0 is never used (nothing precedes it to predict it from)."""
    return any(lab != IGNORE for lab in labels[1:])
