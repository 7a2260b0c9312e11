"""Batching: pad to the longest sample (optionally to a multiple of 8), mask padding by position.

Labels are -100 at pad positions because they are pad positions, never because of their id: the
pad id is often the EOS id (SmolLM2), and EOS must stay trained where it is real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE = -100


def padded_length(lengths: Sequence[int], multiple: int | None) -> int:
    """The batch length: the longest sample, rounded up to `multiple` when set."""
    longest = max(lengths, default=0)
    if multiple and multiple > 1:
        longest = -(-longest // multiple) * multiple
    return longest


def _pad(row: Sequence[int], length: int, value: int) -> list[int]:
    return list(row) + [value] * (length - len(row))


@dataclass
class Collator:
    """Right-pads `{input_ids, labels}` features into `input_ids`, `attention_mask`, `labels` tensors."""

    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        length = padded_length([len(f["input_ids"]) for f in features], self.pad_to_multiple_of)
        ids = [_pad(f["input_ids"], length, self.pad_id) for f in features]
        labels = [_pad(f["labels"], length, IGNORE) for f in features]
        mask = [_pad([1] * len(f["input_ids"]), length, 0) for f in features]
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }


@dataclass
class PairCollator:
    """rm / dpo: `{chosen_ids, chosen_labels, rejected_ids, rejected_labels}` features -> one batch
    of 2B rows, the B chosen sequences first, then the B rejected ones (same order)."""

    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [
            {"input_ids": f[f"{k}_ids"], "labels": f[f"{k}_labels"]}
            for k in ("chosen", "rejected")
            for f in features
        ]
        return Collator(self.pad_id, self.pad_to_multiple_of)(rows)
