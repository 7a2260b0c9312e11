"""Weighted mixing and the held-out split: exact proportions, determinism, val_size forms."""

from __future__ import annotations

import numpy as np
import pytest

from danlu.data.mix import eval_count, mix, plan_counts, source_of
from danlu.utils.errors import UsageError


def test_plan_counts_realise_the_weights_exactly():
    assert plan_counts([100, 1000], [1, 5]) == [100, 500]
    assert plan_counts([1000, 100], [1, 5]) == [20, 100]
    assert plan_counts([30, 30, 30], [1, 2, 3]) == [10, 20, 30]
    assert plan_counts([7, 9], [1, 1]) == [7, 9]  # equal weights: everything is used


def test_mix_is_deterministic_and_interleaved():
    a = mix([100, 1000], [1, 5], val_size=0, seed=3)
    b = mix([100, 1000], [1, 5], val_size=0, seed=3)
    c = mix([100, 1000], [1, 5], val_size=0, seed=4)
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.train, c.train)
    src = source_of(a.train, [100, 1000])
    assert np.bincount(src).tolist() == [100, 500]
    assert len(set(a.train.tolist())) == 600  # nothing used twice
    first_half = np.bincount(src[:300], minlength=2)[0]
    assert 30 <= first_half <= 70  # the small source is spread through, not bunched (expect 50)


def test_val_size_fraction_and_count():
    m = mix([50, 50], [1, 1], val_size=0.1, seed=0)
    assert (len(m.train), len(m.eval)) == (90, 10)
    assert not set(m.train.tolist()) & set(m.eval.tolist())
    assert len(mix([50, 50], [1, 1], val_size=7, seed=0).eval) == 7
    assert eval_count(0.001, 10) == 1 and eval_count(0, 10) == 0
    with pytest.raises(
        UsageError, match=r"^val_size 10 leaves no training samples \(only 10 samples\)$"
    ):
        eval_count(10, 10)
