"""Packing (`packing: true`): several samples per row, none attending to another.

A pack is the concatenation of whole samples, at most `cutoff_len` tokens. Position ids restart
at 0 for each sample. Attention stays inside each sample in one of two ways:
- `mask="4d"`: an additive block-diagonal causal mask [B, 1, L, L] (0 allowed, dtype-min blocked),
  which transformers passes to eager and SDPA attention as it is;
- `mask="position_ids"`: no attention mask; transformers (masking_utils.find_packed_sequence_indices)
  derives the sample boundaries from the restarting position ids, for SDPA/eager as a mask and
  for flash-attention as varlen sequence lengths (no quadratic mask in memory). It does so only
  without a KV cache, so the batch carries `use_cache=False`.
The causal-LM loss shifts labels by one, so the first token of every packed sample would be
predicted from the last token of the sample before it: its label is set to -100 (unpacked, a
sample's first token is never predicted either, so the loss is the same).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from danlu.data.collate import IGNORE, padded_length


@dataclass
class Pack:
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    """Length of each sample in the pack, in order."""

    def add(self, ids: Sequence[int], labels: Sequence[int]) -> None:
        self.input_ids.extend(ids)
        self.labels.extend(
            [IGNORE, *labels[1:]]
        )  # see the module docstring: no cross-sample target
        self.position_ids.extend(range(len(ids)))
        self.lengths.append(len(ids))


def pack_samples(
    samples: Iterable[tuple[Sequence[int], Sequence[int]]], cutoff_len: int
) -> list[Pack]:
    """Best-fit packing of (input_ids, labels) samples into packs of at most `cutoff_len` tokens.

    Each sample goes to the open pack with the least room that still fits it (else a new pack),
    which fills packs well while keeping the input order inside each pack.
    """
    packs: list[Pack] = []
    room: list[tuple[int, int]] = []  # (free tokens, pack index), sorted
    for ids, labels in samples:
        n = len(ids)
        if n > cutoff_len:
            raise ValueError(
                f"pack_samples: a sample of {n} tokens exceeds cutoff_len {cutoff_len}"
            )
        at = bisect_left(room, (n, -1))
        if at < len(room):
            free, index = room.pop(at)
        else:
            free, index = cutoff_len, len(packs)
            packs.append(Pack())
        packs[index].add(ids, labels)
        if free - n > 0:
            insort(room, (free - n, index))
    return packs


@dataclass
class PackCollator:
    """Pads packs into `input_ids`, `labels`, `position_ids` (+ a 4D `attention_mask` for mask='4d')."""

    pad_id: int
    mask: Literal["4d", "position_ids"] = "4d"
    pad_to_multiple_of: int | None = None
    dtype: Any = None
    """dtype of the 4D additive mask: the model's compute dtype (float32 when None)."""

    def __call__(self, packs: list[Pack] | list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        packs = [p if isinstance(p, Pack) else _as_pack(p) for p in packs]

        length = padded_length([len(p.input_ids) for p in packs], self.pad_to_multiple_of)
        batch = {
            "input_ids": torch.tensor([_fill(p.input_ids, length, self.pad_id) for p in packs]),
            "labels": torch.tensor([_fill(p.labels, length, IGNORE) for p in packs]),
            # the padding tail counts from 0 like one more sample, so it never joins the last sample
            "position_ids": torch.tensor(
                [p.position_ids + list(range(length - len(p.input_ids))) for p in packs]
            ),
        }
        if self.mask == "4d":
            batch["attention_mask"] = block_causal_mask(packs, length, self.dtype or torch.float32)
        else:  # transformers only derives packing from position ids when no KV cache is built
            batch["use_cache"] = False
        return batch


def _as_pack(row: dict[str, Any]) -> Pack:
    """A row of `pack_dataset` (labels already shifted-safe) back into a Pack."""
    return Pack(
        list(row["input_ids"]), list(row["labels"]), list(row["position_ids"]), list(row["lengths"])
    )


PACK_WINDOW = 20_000
"""Samples packed together at once: best-fit quality is near its limit well before this, and it
bounds memory, so millions of samples pack in constant RAM."""


def pack_dataset(ds: Any, cutoff_len: int, window: int = PACK_WINDOW) -> Any:
    """Pack a tokenised `datasets.Dataset` (input_ids, labels) into rows of at most `cutoff_len`.

    The result is written to an Arrow file by `Dataset.from_generator` (memory-mapped, cached by
    datasets' fingerprint) with columns input_ids, labels, position_ids, lengths and length.
    """
    import datasets

    def rows() -> Any:
        for start in range(0, len(ds), window):
            chunk = ds[start : start + window]
            for p in pack_samples(
                zip(chunk["input_ids"], chunk["labels"], strict=True), cutoff_len
            ):
                yield {
                    "input_ids": p.input_ids,
                    "labels": p.labels,
                    "position_ids": p.position_ids,
                    "lengths": p.lengths,
                    "length": len(p.input_ids),
                }

    return datasets.Dataset.from_generator(rows, keep_in_memory=False)


def token_lengths(ds: Any) -> Any:
    """Tokens per row of a tokenised Dataset, as an Arrow array (read from the list offsets,
    without decoding a row); for a pair dataset (rm, dpo), the longer side of each pair."""
    import pyarrow.compute as pc

    table = ds.with_format("arrow")
    if "input_ids" in ds.column_names:
        return pc.list_value_length(table["input_ids"])
    chosen = pc.list_value_length(table["chosen_input_ids"])
    return pc.max_element_wise(chosen, pc.list_value_length(table["rejected_input_ids"]))


def with_lengths(ds: Any) -> Any:
    """Add a `length` column (token count) for length-grouped sampling."""
    if "length" in ds.column_names:
        return ds
    return ds.add_column("length", token_lengths(ds).to_pylist())


def _fill(row: list[int], length: int, value: int) -> list[int]:
    return row + [value] * (length - len(row))


def block_causal_mask(packs: list[Pack], length: int, dtype: Any) -> Any:
    """[B, 1, L, L] additive mask: 0 where query i may attend key j (same sample, j <= i)."""
    import torch

    seg = torch.tensor([_segments(p.lengths, length) for p in packs])  # [B, L] sample index
    same = seg[:, :, None] == seg[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = (same & causal)[:, None]
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def _segments(lengths: list[int], length: int) -> list[int]:
    seg = [k for k, n in enumerate(lengths) for _ in range(n)]
    return seg + [len(lengths)] * (length - len(seg))  # padding: a segment of its own
