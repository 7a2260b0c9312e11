"""Fixtures of the training tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _keep_threads():
    # runs set `threads=1` for bit-exact comparisons; give the rest of the suite its threads back
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
