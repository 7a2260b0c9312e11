"""Log-probabilities of the trained (answer) tokens of a batch: what preference training and
preference evaluation both score sequences by."""

from __future__ import annotations

from typing import Any


def answer_logps(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(summed log-probability of the labelled tokens, their count), per row.

    `labels` are the input ids with -100 outside the answer (the loss-mask rule): position t
    predicts token t+1, as in the causal LM loss.
    """
    import torch

    labels = labels[:, 1:]
    logits = logits[:, :-1, :]
    mask = labels != -100
    safe = labels.masked_fill(~mask, 0)
    # log_softmax in float32: bf16 log-probabilities of long answers lose the differences DPO
    # is trained on.
    token_logps = torch.gather(logits.float().log_softmax(-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)
