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
_kind = "plain"  # its stage's column layout


@dataclass
class TokStats:
    kept: int = 0
    truncated: int = 0
    dropped: Counter = field(default_factory=Counter)

    def add(self, other: TokStats) -> None:
        self.kept += other.kept
        self.truncated += other.truncated
        self.dropped.update(other.dropped)


LAYOUTS = {
    "plain": ("input_ids", "labels"),
    "pairs": ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"),
    "kto": ("input_ids", "labels", "kto_label"),
    "grpo": ("input_ids", "prompt", "columns"),
}
"""The columns of each stage's Arrow file (plus `source`)."""


def layout(stage: str) -> str:
    return {"rm": "pairs", "dpo": "pairs", "kto": "kto", "grpo": "grpo"}.get(stage, "plain")


def schema(kind: str):
    import pyarrow as pa

    types = {"kto_label": pa.bool_(), "prompt": pa.string(), "columns": pa.string()}
    fields = [(n, types.get(n, pa.list_(pa.int32()))) for n in LAYOUTS[kind]]
    return pa.schema([*fields, ("source", pa.string())])


def _init(factory: EncoderFactory, tokenizer: Any, args: Any, stage: str) -> None:
    global _encoder, _kind
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers are the parallelism
    _encoder, _kind = factory(tokenizer, args, stage), layout(stage)


def _row(result: Any) -> dict[str, Any]:
    """A result's columns: pairs fill chosen_* / rejected_*; a kto result adds its label, a
    grpo prompt its reward-function inputs."""
    if getattr(result, "chosen", None) is not None:
        return {f"{side}_{k}": getattr(getattr(result, side), k)
                for side in ("chosen", "rejected") for k in ("input_ids", "labels")}  # fmt: skip
    names = ("input_ids", "labels", "prompt", "columns")
    row = {n: getattr(result, n) for n in names if hasattr(result, n)}
    if hasattr(result, "label"):
        row["kto_label"] = result.label
    return row


def _encode_batch(batch: list[Conversation]) -> tuple[Any, TokStats]:
    """One batch -> (Arrow RecordBatch of the kept samples, counts). Runs in a worker."""
    import pyarrow as pa

    assert _encoder is not None
    stats = TokStats()
    kind = _kind
    rows: dict[str, list] = {name: [] for name in schema(kind).names}
    for conv in batch:
        result = _encoder(conv)
        if result.dropped:
            stats.dropped[result.dropped] += 1
            continue
        stats.kept += 1
        stats.truncated += bool(result.truncated)
        row = _row(result)
        if getattr(result, "chosen", None) is not None:
            kind = "pairs"  # a custom encoder's pairs, whatever the stage says
        for name, value in row.items():
            rows.setdefault(name, []).append(value)
        rows["source"].append(conv.source)
    names = schema(kind).names
    return pa.RecordBatch.from_pydict({n: rows[n] for n in names}, schema=schema(kind)), stats


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
    if writer is None:  # no input at all: an empty file with the stage's schema keeps loaders happy
        with pa.ipc.new_stream(str(out), schema(layout(stage))):
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
