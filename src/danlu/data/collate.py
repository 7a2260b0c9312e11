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
    """rm / dpo: `{chosen_input_ids, chosen_labels, rejected_input_ids, rejected_labels}` features
    (the pipeline's pair columns) -> one batch of 2B rows, the B chosen sequences first, then the
    B rejected ones (same order); precomputed reference log-probs travel as two (B,) tensors."""

    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        rows = [
            {"input_ids": f[f"{k}_input_ids"], "labels": f[f"{k}_labels"]}
            for k in ("chosen", "rejected")
            for f in features
        ]
        batch = Collator(self.pad_id, self.pad_to_multiple_of)(rows)
        for key in REFERENCE_COLUMNS:
            if key in features[0]:
                batch[key] = torch.tensor([f[key] for f in features], dtype=torch.float32)
        return batch


REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
"""Per-pair reference log-probabilities, when precomputed before training (dpo)."""


@dataclass
class KtoCollator:
    """kto: B labelled answers -> 2B rows: the B records, then B mismatched rows (record i's
    prompt with record i-1's answer, cut to the batch's longest record) whose log-ratios give
    the KL baseline z0 of KTO (Ethayarajh et al. 2024; TRL and LLaMA-Factory pair them the same
    way); `kto_label` (B,) says which answers are good. A batch of one pairs a record with
    itself: use per_device_train_batch_size >= 2 for a real baseline."""

    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        from danlu.data.truncate import first_trained

        rows = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
        longest = max(len(r["input_ids"]) for r in rows)
        for i, f in enumerate(features):
            other = features[i - 1]  # i = 0 takes the last record's answer
            k, j = first_trained(f["labels"]), first_trained(other["labels"])
            ids = [*f["input_ids"][:k], *other["input_ids"][j:]][:longest]
            labels = [*[IGNORE] * k, *other["labels"][j:]][:longest]
            rows.append({"input_ids": ids, "labels": labels})
        batch = Collator(self.pad_id, self.pad_to_multiple_of)(rows)
        batch["kto_label"] = torch.tensor([bool(f["kto_label"]) for f in features])
        return batch


@dataclass
class PromptCollator:
    """grpo: prompts, left-padded (generation continues each row at its end) into `prompt_ids`
    and `prompt_mask`; `prompt` and `columns` (JSON strings for the reward functions) as lists."""

    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        length = padded_length([len(f["input_ids"]) for f in features], self.pad_to_multiple_of)
        pads = [length - len(f["input_ids"]) for f in features]
        ids = [
            [self.pad_id] * p + list(f["input_ids"]) for p, f in zip(pads, features, strict=True)
        ]
        mask = [[0] * p + [1] * (length - p) for p in pads]
        return {
            "prompt_ids": torch.tensor(ids, dtype=torch.long),
            "prompt_mask": torch.tensor(mask, dtype=torch.long),
            "prompt": [f["prompt"] for f in features],
            "columns": [f["columns"] for f in features],
        }
