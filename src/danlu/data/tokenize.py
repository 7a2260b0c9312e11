"""Tokenise a stream of Conversations into an Arrow file, in parallel worker processes.

The encoder is pluggable: an `EncoderFactory(tokenizer, args, stage)` returns the function that
turns one Conversation into an object with `input_ids`, `labels`, `truncated` and `dropped`
(danlu.data.encode's EncodeResult). Each worker builds its encoder once; the main process feeds
batches with a bounded window of outstanding work (Pool.imap would read the whole input ahead
of the workers) and appends each result, in input order, to an Arrow IPC stream on disk. Memory
is therefore bounded by the window, whatever the size of the data.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from danlu.data.types import Conversation

EncoderFactory = Callable[[Any, Any, str], Callable[[Conversation], Any]]
BATCH = 512
_encoder: Callable[[Conversation], Any] | None = None  # the worker's own encoder


@dataclass
class TokStats:
    kept: int = 0
    truncated: int = 0
    dropped: Counter = field(default_factory=Counter)

    def add(self, other: TokStats) -> None:
        self.kept += other.kept
        self.truncated += other.truncated
        self.dropped.update(other.dropped)


def schema(pairwise: bool):
    import pyarrow as pa

    ids = pa.list_(pa.int32())
    cols = ["chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"]
    names = cols if pairwise else ["input_ids", "labels"]
    return pa.schema([*[(n, ids) for n in names], ("source", pa.string())])


def _init(factory: EncoderFactory, tokenizer: Any, args: Any, stage: str) -> None:
    global _encoder
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers are the parallelism
    _encoder = factory(tokenizer, args, stage)


def _encode_batch(batch: list[Conversation]) -> tuple[Any, TokStats]:
    """One batch -> (Arrow RecordBatch of the kept samples, counts). Runs in a worker.

    A pairwise result (with `.chosen` / `.rejected` EncodeResults) fills the chosen_* and
    rejected_* columns; any other fills input_ids / labels.
    """
    import pyarrow as pa

    assert _encoder is not None
    stats = TokStats()
    pairwise = batch[0].chosen is not None
    rows: dict[str, list] = {name: [] for name in schema(pairwise).names}
    for conv in batch:
        result = _encoder(conv)
        if result.dropped:
            stats.dropped[result.dropped] += 1
            continue
        stats.kept += 1
        stats.truncated += bool(result.truncated)
        parts = (
            [("chosen_", result.chosen), ("rejected_", result.rejected)]
            if pairwise
            else [("", result)]
        )
        for prefix, r in parts:
            rows[f"{prefix}input_ids"].append(r.input_ids)
            rows[f"{prefix}labels"].append(r.labels)
        rows["source"].append(conv.source)
    return pa.RecordBatch.from_pydict(rows, schema=schema(pairwise)), stats


def batches(convs: Iterable[Conversation], size: int = BATCH) -> Iterator[list[Conversation]]:
    batch: list[Conversation] = []
    for conv in convs:
        batch.append(conv)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize_to_arrow(
    convs: Iterable[Conversation],
    out: Path,
    factory: EncoderFactory,
    tokenizer: Any,
    args: Any,
    stage: str,
    workers: int,
) -> TokStats:
    """Encode every conversation into the Arrow stream file `out`; return the counts."""
    import pyarrow as pa

    total = TokStats()
    writer = None
    try:
        for record_batch, stats in _results(
            batches(convs), factory, tokenizer, args, stage, workers
        ):
            if writer is None:
                writer = pa.ipc.new_stream(str(out), record_batch.schema)
            total.add(stats)
            if record_batch.num_rows:
                writer.write_batch(record_batch)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no input at all: an empty file with the sft schema keeps loaders happy
        with pa.ipc.new_stream(str(out), schema(False)):
            pass
    return total


def _results(
    work: Iterator[list[Conversation]], factory: EncoderFactory, tokenizer: Any, args: Any,
    stage: str, workers: int,
) -> Iterator[tuple[Any, TokStats]]:  # fmt: skip
    # The encoder is built here first: a bad template or setting fails once, in this process.
    # (Built in a Pool initializer, it would kill each worker as it starts, and the Pool would
    # start another, forever.)
    _init(factory, tokenizer, args, stage)
    if workers <= 1:
        yield from map(_encode_batch, work)
        return
    # fork: workers inherit the tokenizer and the encoder just built, without pickling or
    # re-importing transformers (seconds per worker with spawn); they touch no torch threads.
    if "fork" in mp.get_all_start_methods():
        context, init, init_args = mp.get_context("fork"), None, ()
    else:
        context, init, init_args = mp.get_context("spawn"), _init, (factory, tokenizer, args, stage)
    with context.Pool(workers, init, init_args) as pool:
        window: deque = deque()
        for batch in work:
            window.append(pool.apply_async(_encode_batch, (batch,)))
            if len(window) >= 2 * workers:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()
