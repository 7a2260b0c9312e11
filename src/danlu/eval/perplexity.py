"""Token-level loss and perplexity, with the same tokens and loss mask as training.

Definition: over every trained token t of every sample (label != -100, DESIGN §3's mask for chat
data; every token for text data), loss = mean of -log p(t | tokens before t), perplexity =
exp(loss). It is the micro average over tokens (a long answer weighs more than a short one), the
quantity a training run's validation loss reports, not a mean of per-sample perplexities. The
first token of a sequence has no context and is never scored.

`masked_loss` works on any rows of {input_ids, labels}: the lead wires training's `eval_steps`
validation loss to it with the eval split of `build_dataset`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from danlu.eval.forward import IGNORE, kept_logprobs, length_batches, pad_right, progress


@dataclass
class LossStats:
    loss: float
    """Mean negative log-likelihood per scored token (nats)."""
    perplexity: float
    tokens: int
    """Scored tokens."""
    samples: int
    per_sample: list[tuple[float, int]] = field(default_factory=list)
    """(summed NLL, scored tokens) of each input row, in input order (0 tokens: nothing scored)."""


def masked_loss(
    model: Any, rows: Sequence[dict[str, Sequence[int]]], pad_id: int, batch_size: int = 8,
    quiet: bool = True,
) -> LossStats:  # fmt: skip
    """Loss and perplexity of `model` on rows of {input_ids, labels} (labels unshifted).

    The model runs in eval mode (no dropout) and is put back in the mode it was in, so a
    training loop can call this between steps.
    """
    per_sample: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    batches = length_batches([len(r["input_ids"]) for r in rows], batch_size)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        for batch in progress(batches, len(batches), "perplexity", quiet):
            sums, counts = _batch_nll(model, [rows[i] for i in batch], pad_id)
            for i, nll, n in zip(batch, sums, counts, strict=True):
                per_sample[i] = (nll, n)
    finally:
        model.train(was_training)
    total = sum(n for _, n in per_sample)
    nll_sum = sum(s for s, _ in per_sample)
    loss = nll_sum / total if total else float("nan")
    return LossStats(loss, math.exp(loss) if total else float("nan"), total,
                     sum(1 for _, n in per_sample if n), per_sample)  # fmt: skip


def _batch_nll(
    model: Any, rows: list[dict[str, Sequence[int]]], pad_id: int
) -> tuple[list[float], list[int]]:
    """Summed NLL and scored-token count of each row of one batch."""
    import torch

    ids, mask = pad_right([r["input_ids"] for r in rows], pad_id)
    labels = torch.full_like(ids, IGNORE)
    for i, r in enumerate(rows):
        labels[i, : len(r["labels"])] = torch.tensor(list(r["labels"]), dtype=torch.long)
    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]  # position t predicts token t + 1
    keep = targets != IGNORE
    if not keep.any():
        return [0.0] * len(rows), [0] * len(rows)
    logprobs = kept_logprobs(model, ids, mask, keep)
    nll = -logprobs.gather(1, targets[keep].to(logprobs.device)[:, None]).squeeze(1).double().cpu()
    row_of = keep.nonzero()[:, 0]
    sums = torch.zeros(len(rows), dtype=torch.float64).index_add_(0, row_of, nll)
    counts = keep.sum(dim=1)
    return sums.tolist(), counts.tolist()


@dataclass
class EncodedSet:
    """Conversations tokenised for perplexity, with what was dropped or cut and why."""

    rows: list[dict[str, list[int]]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    truncated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


def encode_for_loss(convs: Sequence[Any], tokenizer: Any, data_args: Any) -> EncodedSet:
    """Tokens + labels exactly as training makes them: text records every token (stage pt),
    chat records the answer-only mask (stage sft); pairwise records score prompt + chosen."""
    from danlu.data.encode import encode_conversation
    from danlu.eval.samples import as_chat, template_for

    out = EncodedSet()
    for conv in convs:
        stage = "pt" if conv.text is not None else "sft"
        template = template_for(data_args.template, tokenizer) if stage == "sft" else None
        res = encode_conversation(as_chat(conv), tokenizer, template, data_args, stage)  # type: ignore[arg-type]
        if res.dropped:
            out.dropped[res.dropped] += 1
            continue
        out.truncated += int(res.truncated)
        out.rows.append({"input_ids": res.input_ids, "labels": res.labels})
        out.sources.append(conv.source)
    return out
