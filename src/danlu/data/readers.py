"""Data sources -> a stream of Conversations: files or hub data sets, column map, format.

`read_source` is a generator: it holds one record at a time, so a source of any size streams.
Bad records go through the `on_bad_record` policy; what was read, skipped and detected is
recorded in a SourceStats for the report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from danlu.config.sections import DataSource
from danlu.data.bad import BadRecord, BadRecordPolicy
from danlu.data.files import SUFFIXES, records_of, resolve_files
from danlu.data.formats import (
    FORMAT_NAMES,
    NO_RULES,
    RecordRules,
    detect_format,
    to_conversation,
)
from danlu.data.types import Conversation, Message
from danlu.utils.errors import UsageError


@dataclass
class SourceStats:
    """What reading one `data:` entry found; lands in data_report.json under `sources`."""

    path: str
    format: str = ""
    detected: bool = False
    records: int = 0
    """Records read (good and bad) before max_samples stopped reading."""
    skipped: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def read_source(
    src: DataSource,
    stats: SourceStats,
    on_bad_record: str = "error",
    index: int = 0,
    rules: RecordRules = NO_RULES,
) -> Iterator[Conversation]:
    """Stream the Conversations of one source; raise UsageError for unusable input.

    `index` is the source's position in `data:`, stamped on each Conversation for the mix;
    `rules` what the stage asks of each record (grpo: prompts only; kto: a label).
    """
    policy = BadRecordPolicy(on_bad_record)
    fmt = src.format
    good = 0
    for where, raw in _raw_records(src, stats):
        stats.records += 1
        if isinstance(raw, BadRecord):
            policy.handle(where, raw)
            stats.skipped = dict(policy.skipped)
            continue
        raw = _rename(raw, src.columns)
        if fmt == "auto":
            fmt = _detect(raw, where)
            stats.detected = True
        stats.format = fmt
        try:
            conv = to_conversation(raw, fmt, where, rules)
        except BadRecord as bad:
            policy.handle(where, bad)
            stats.skipped = dict(policy.skipped)
            continue
        yield _finish(conv, src, index)
        good += 1
        if src.max_samples is not None and good >= src.max_samples:
            break
    if good == 0:
        raise UsageError(_empty_message(src.path, stats))


def _raw_records(src: DataSource, stats: SourceStats) -> Iterator[tuple[str, Any]]:
    """(`file:line`, raw record or BadRecord) over every file of the source."""
    if is_local(src.path):
        for path in resolve_files(src.path):
            stats.files.append(str(path))
            for line, raw in records_of(path):
                yield f"{path}:{line}", raw
    else:
        stats.files.append(f"hub:{src.path}")
        for row, raw in enumerate(_hub_records(src), 1):
            yield f"{src.path}:{row}", raw


def is_local(path: str) -> bool:
    """A `datasets` name looks like `owner/name` or `name`, with no data-file suffix on disk."""
    p = Path(path).expanduser()
    if p.exists() or p.suffix.lower() in SUFFIXES or any(c in path for c in "*?["):
        return True
    return path.startswith((".", "/", "~")) or os.sep + os.sep in path


def _hub_records(src: DataSource) -> Iterator[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(src.path, split=src.split, streaming=True)
        yield from ds
    except Exception as e:  # offline, unknown name, gated: all mean "cannot use this name"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"{src.path}: no such local file, and loading it as a `datasets` name failed "
            f"(offline or unknown): {first}"
        ) from None


def _rename(record: Any, columns: dict[str, str]) -> Any:
    """Apply the column map {our_name: their_name}; non-objects pass through to be reported."""
    if not columns or not isinstance(record, dict):
        return record
    record = dict(record)
    for ours, theirs in columns.items():
        if theirs in record:
            record[ours] = record.pop(theirs)
    return record


def _detect(record: Any, where: str) -> str:
    fmt = detect_format(record) if isinstance(record, dict) else None
    if fmt is None:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise UsageError(
            f"{where}: cannot detect the format from fields {keys}; "
            f"set format: to one of {', '.join(FORMAT_NAMES)} (and columns: to rename fields)"
        )
    return fmt


def _finish(conv: Conversation, src: DataSource, index: int) -> Conversation:
    conv.dataset = index
    if src.system and conv.messages and conv.messages[0].role != "system":
        conv.messages.insert(0, Message("system", src.system))
    return conv


def _empty_message(path: str, stats: SourceStats) -> str:
    if not stats.records:
        return f"{path}: empty data set (no records)"
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(stats.skipped.items()))
    return f"{path}: no usable records ({stats.records} read, all skipped: {reasons})"
