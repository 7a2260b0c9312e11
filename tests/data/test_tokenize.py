"""Tokenisation in worker processes: an encoder that cannot be built fails once, in the parent,
within seconds (built in each worker it killed every worker the pool started, forever), and a
record error inside a worker ends the whole pool."""

from __future__ import annotations

import signal
import time

import pytest

from danlu.data.tokenize import tokenize_to_arrow
from danlu.data.types import Conversation, Message
from danlu.utils.errors import UsageError

CONVS = [
    Conversation([Message("user", "q"), Message("assistant", f"a{i}")], "d.jsonl:1")
    for i in range(40)
]


def _broken_factory(tokenizer, args, stage):
    raise UsageError("template: 'nonesuch' is not a template")


def _failing_encoder_factory(tokenizer, args, stage):
    def encode(conv):
        raise UsageError(f"{conv.source}: cannot encode")

    return encode


@pytest.fixture
def time_limit():
    def expired(*_):
        raise TimeoutError("tokenisation hung")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("factory", "message"),
    [(_broken_factory, "template: 'nonesuch'"), (_failing_encoder_factory, "d.jsonl:1: cannot")],
)
def test_errors_end_tokenisation_promptly(factory, message, workers, tmp_path, time_limit):
    start = time.monotonic()
    with pytest.raises(UsageError, match=message):
        tokenize_to_arrow(CONVS, tmp_path / "out.arrow", factory, None, None, "sft", workers)
    assert time.monotonic() - start < 30
