"""Mixing several tokenised sources by weight, and the held-out split. Pure index arithmetic.

Weights are proportions of the mixed data set. With different weights the mix is the largest
one that realises them exactly while using each sample at most once (the source that runs
out first, relative to its weight, is used whole; the others are subsampled, seeded). With
equal weights (the default) every sample of every source is used: listing two files means
"train on both", as users expect. The order is a seeded shuffle, so the sources are
interleaved in proportion throughout, and the same seed always gives the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from danlu.utils.errors import UsageError


@dataclass
class Mix:
    train: np.ndarray
    """Indices into the concatenation of the sources, in training order."""
    eval: np.ndarray
    used: list[int]
    """Samples taken from each source."""


def plan_counts(sizes: list[int], weights: list[float]) -> list[int]:
    """How many samples to take from each source to realise the weights."""
    if len(set(weights)) <= 1:
        return list(sizes)
    scale = min(n / w for n, w in zip(sizes, weights, strict=True))
    return [min(n, max(1, int(w * scale + 1e-9))) for n, w in zip(sizes, weights, strict=True)]


def mix(sizes: list[int], weights: list[float], val_size: float, seed: int) -> Mix:
    """Choose, interleave and split: deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    used = plan_counts(sizes, weights)
    offsets = np.cumsum([0, *sizes[:-1]])
    parts = []
    for off, n, k in zip(offsets, sizes, used, strict=True):
        pick = rng.permutation(n)[:k] if k < n else np.arange(n)
        parts.append(off + pick)
    order = rng.permutation(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    n_eval = eval_count(val_size, len(order))
    return Mix(train=order[n_eval:], eval=order[:n_eval], used=used)


def eval_count(val_size: float, total: int) -> int:
    """`val_size` as a fraction (< 1) or a count (>= 1) of `total`; train must keep something."""
    n = round(val_size * total) if val_size < 1 else int(val_size)
    if val_size > 0 and n == 0:
        n = 1  # a fraction that rounds to nothing still holds one sample out, as asked
    if n >= total and val_size > 0:
        raise UsageError(f"val_size {val_size:g} leaves no training samples (only {total} samples)")
    return n


def source_of(indices: np.ndarray, sizes: list[int]) -> np.ndarray:
    """The source number of each concatenated index."""
    return np.searchsorted(np.cumsum(sizes), indices, side="right")
