"""Log-probabilities of the trained (answer) tokens of a batch: what preference training and
preference evaluation both score sequences by.

The output projection over a 49k-150k vocabulary at every position costs more time and memory
than the rest of a small model, and only the positions that predict an answer token are needed.
Models whose forward takes transformers' `logits_to_keep` with a boolean [batch, length] mask
project just those positions (`answer_logps_of`); others (remote code, PEFT prompt learning,
whose virtual tokens shift positions) run in full (`answer_logps`). Both give the same numbers.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any


def answer_logps(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(summed log-probability of the labelled tokens, their count), per row, from full logits.

    `labels` are the input ids with -100 outside the answer (the loss-mask rule): position t
    predicts token t+1, as in the causal LM loss.
    """
    labels = labels[:, 1:]
    logits = logits[:, :-1, :]
    mask = labels != -100
    safe = labels.masked_fill(~mask, 0)
    token = target_logps(logits, safe)
    return (token * mask).sum(-1), mask.sum(-1)


def target_logps(logits: Any, targets: Any) -> Any:
    """log softmax(logits)[target] in float32 (bf16 log-probabilities of long answers lose the
    differences DPO is trained on), as logit - logsumexp: no second vocabulary-sized tensor is
    kept for the backward pass, as log_softmax's output would be."""
    import torch

    logits = logits.float()
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def answer_logps_of(
    model: Any, inputs: dict, labels: Any, probe: Any = None
) -> tuple[Any, Any, Any]:
    """(summed answer log-probabilities, counts, the model's output) of one forward of `model`
    on `inputs`, projecting only the answer positions where the model allows it. `probe` is the
    unwrapped model to inspect when `model` is a DDP/DeepSpeed wrapper."""
    import torch

    probe = probe if probe is not None else model
    if supports_logits_to_keep(probe):
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != -100
        counts = keep.sum(-1)
        out = model(**inputs, use_cache=False, logits_to_keep=keep)
        if out.logits.ndim == 2 and out.logits.shape[0] == int(counts.sum()):
            token = target_logps(out.logits, labels[:, 1:][keep[:, :-1]])
            rows = torch.arange(labels.shape[0], device=labels.device).repeat_interleave(counts)
            sums = torch.zeros(labels.shape[0], device=token.device, dtype=token.dtype)
            return sums.index_add(0, rows, token), counts, out
        remember_keep(probe, False)  # ignored or misread the mask
    out = model(**inputs, use_cache=False)
    logps, counts = answer_logps(out.logits, labels)
    return logps, counts, out


def supports_logits_to_keep(model: Any) -> bool:
    """Whether `model(..., logits_to_keep=bool_mask)` projects only the masked positions."""
    cached = getattr(model, "_danlu_keep_ok", None)
    if cached is not None:
        return bool(cached)
    peft_cfg = getattr(model, "active_peft_config", None)
    if peft_cfg is not None and getattr(peft_cfg, "is_prompt_learning", False):
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def remember_keep(model: Any, ok: bool) -> None:
    remember(model, "_danlu_keep_ok", ok)


def remember(model: Any, name: str, value: Any) -> None:
    """Note what was learnt about a model's forward on the model itself (it lives and dies
    with it, and a frozen reference copy learns for itself)."""
    with contextlib.suppress(AttributeError):  # exotic wrappers refuse new attributes
        setattr(model, name, value)
