"""Batched scoring forward passes shared by multiple choice and perplexity.

Scoring needs the log-probabilities at a few positions of each sequence (the last one for a
multiple-choice letter, the trained ones for perplexity), never the full [batch, length, vocab]
logits: with a 49k-150k vocabulary the output projection over every position costs more time and
memory than the rest of a small model. Models that accept transformers' `logits_to_keep` with a
boolean [batch, length] mask project only the kept positions; others (remote code, PEFT prompt
learning, whose virtual tokens shift the positions) run in full and are indexed afterwards.
Sequences are right-padded with an attention mask, so real tokens never see padding and the
position ids of real tokens are those of the unpadded sequence.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from danlu.models.logps import remember_keep, supports_logits_to_keep

IGNORE = -100


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) long tensors, right-padded to the longest sequence."""
    import torch

    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def kept_logprobs(model: Any, input_ids: Any, attention_mask: Any, keep: Any) -> Any:
    """float32 log-softmax rows at the True positions of `keep` [B, T], in row-major order.

    Row k of the result is the next-token distribution after the k-th kept position.
    """
    import torch

    device = model_device(model)
    ids, mask, keep = input_ids.to(device), attention_mask.to(device), keep.to(device)
    n = int(keep.sum())
    with torch.inference_mode():
        if supports_logits_to_keep(model):
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
            if logits.ndim == 2 and logits.shape[0] == n:
                remember_keep(model, True)
                return torch.log_softmax(logits.float(), dim=-1)
            remember_keep(model, False)  # an older transformers ignored or misread the mask
        logits = model(input_ids=ids, attention_mask=mask).logits
        logits = logits[:, -ids.shape[1] :][keep]  # prompt learning prepends virtual positions
        return torch.log_softmax(logits.float(), dim=-1)


def model_device(model: Any) -> Any:
    import torch

    try:
        return next(p.device for p in model.parameters() if p.device.type != "meta")
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (padding is minimal, and
    an out-of-memory error shows up in the first batch rather than the last)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def progress(items: Iterable[Any], total: int, desc: str, quiet: bool = False) -> Iterator[Any]:
    """A tqdm bar on stderr when it is a terminal and not `quiet`; the bare iterable otherwise."""
    if quiet or not sys.stderr.isatty():
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=desc, leave=False, file=sys.stderr)
