"""Raw records from local files, streamed: each reader yields `(line, record | BadRecord)`.

Nothing here holds more than one chunk of a file in memory. `line` is 1-based: the line the
record starts on (JSON, JSONL, CSV, .txt) or the row number (Parquet, which has no lines).
A record that cannot be decoded is yielded as a BadRecord so the caller's `on_bad_record`
policy decides; reading then goes on with the next record where the format allows it.

Plain .txt files (`stage: pt`): one document per paragraph, i.e. per run of non-blank lines
separated by one or more blank lines. A whole-file document would make a large book one
sample, most of it cut by `cutoff_len`; paragraphs stream and each fits.
"""

from __future__ import annotations

import codecs
import csv
import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from danlu.data.bad import BadRecord
from danlu.utils.errors import UsageError

SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".txt")
RawRecord = tuple[int, "dict[str, Any] | BadRecord"]

_CHUNK = 1 << 20
_MAX_RECORD_CHARS = 64 << 20  # a JSON array element this large is a broken file, not a record


def resolve_files(path: str) -> list[Path]:
    """The data files `path` names: one file, every data file under a directory, or a glob."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() not in SUFFIXES:
            raise UsageError(
                f"{path}: unsupported file type '{p.suffix}' (expected {', '.join(SUFFIXES)})"
            )
        return [p]
    if p.is_dir():
        found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
        if not found:
            raise UsageError(f"{path}: directory holds no data files ({', '.join(SUFFIXES)})")
        return found
    if glob.has_magic(path):
        found = sorted(Path(f) for f in glob.glob(os.path.expanduser(path), recursive=True))
        found = [f for f in found if f.is_file() and f.suffix.lower() in SUFFIXES]
        if not found:
            raise UsageError(f"{path}: the pattern matches no data files")
        return found
    raise UsageError(f"{path}: no such data file or directory")


def read_file(path: Path) -> Iterator[RawRecord]:
    """Raw records of one file, by its suffix."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    return _read_txt(path)


def _decode_line(raw: bytes) -> str | BadRecord:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return BadRecord(
            "invalid UTF-8", f"invalid UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1}"
        )


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return BadRecord("invalid JSON", f"invalid JSON: {e.msg} (column {e.colno})")


def _read_jsonl(path: Path) -> Iterator[RawRecord]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            text = _decode_line(raw)
            if isinstance(text, BadRecord):
                yield lineno, text
            elif text.strip():
                # strip: an error at the line's end must report this line's column, not line 2's
                yield lineno, _parse_json(text.strip())


def _read_json(path: Path) -> Iterator[RawRecord]:
    """A JSON array (streamed element by element) or JSON Lines saved with a .json suffix."""
    with path.open("rb") as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        yield from _JsonArray(path).records()
    else:
        yield from _read_jsonl(path)


class _JsonArray:
    """Streams the elements of a top-level JSON array with `raw_decode`, chunk by chunk.

    There is no way to resynchronise after a syntax error inside an array, so decode errors
    here are fatal even under `on_bad_record: skip` (the message says to fix or convert).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # line number at buf[self.mark]
        self.mark = 0
        self.col0 = 0  # column of buf[0] in its line (the buffer drops what was consumed)
        self.decoder = json.JSONDecoder()

    def records(self) -> Iterator[RawRecord]:
        with self.path.open("rb") as self.file:
            self.utf8 = codecs.getincrementaldecoder("utf-8")()
            self._expect("[")
            if self._peek() == "]":
                return
            while True:
                self._peek()  # raw_decode does not skip leading whitespace
                line = self._line_at(self.pos)
                yield line, self._value()
                c = self._peek()
                self.pos += 1
                if c == "]":
                    return
                if c != ",":
                    self._fail("expected ',' or ']' after an array element", self.pos - 1)

    def _more(self) -> bool:
        if self.eof:
            return False
        raw = self.file.read(_CHUNK)
        self.eof = not raw
        try:
            text = self.utf8.decode(raw, final=self.eof)
        except UnicodeDecodeError as e:
            where = self._line_at(len(self.buf)) + raw[: e.start].count(b"\n")
            msg = f"invalid UTF-8: byte 0x{raw[e.start]:02x} (a JSON array cannot be read past it)"
            raise _Fatal(where, BadRecord("invalid UTF-8", msg, fatal=True)) from None
        self._line_at(self.pos)  # drop what was consumed, keeping the line count right
        newline = self.buf.rfind("\n", 0, self.pos)
        self.col0 = self.pos - newline - 1 if newline >= 0 else self.col0 + self.pos
        self.buf, self.mark, self.pos = self.buf[self.pos :] + text, 0, 0
        return bool(text) or not self.eof

    def _line_at(self, i: int) -> int:
        self.line += self.buf.count("\n", self.mark, i)
        self.mark = i
        return self.line

    def _peek(self) -> str | None:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n\ufeff":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return None

    def _expect(self, char: str) -> None:
        if self._peek() != char:
            self._fail(f"expected '{char}'", self.pos)
        self.pos += 1

    def _value(self) -> Any:
        while True:
            try:
                value, self.pos = self.decoder.raw_decode(self.buf, self.pos)
                return value
            except json.JSONDecodeError as e:
                if self._truly_invalid(e):
                    self._fail(e.msg, e.pos)
                start = self.pos
                if not self._more():  # it moved the buffer's start to `start`: so did the error
                    self._fail(e.msg, e.pos - start)

    def _truly_invalid(self, e: json.JSONDecodeError) -> bool:
        """More input cannot fix an error well before the end of what has been read."""
        if len(self.buf) - self.pos > _MAX_RECORD_CHARS:
            return True
        return not e.msg.startswith("Unterminated string") and e.pos < len(self.buf) - 8

    def _fail(self, problem: str, at: int) -> None:
        line = self._line_at(at)
        newline = self.buf.rfind("\n", 0, at)
        column = at - newline if newline >= 0 else self.col0 + at + 1
        msg = f"invalid JSON: {problem} (column {column}; a JSON array cannot be read past it)"
        raise _Fatal(line, BadRecord("invalid JSON", msg, fatal=True))


class _Fatal(Exception):
    """Carries a fatal BadRecord out of the array reader; `records_of` turns it into a yield."""

    def __init__(self, line: int, bad: BadRecord) -> None:
        self.line, self.bad = line, bad


def records_of(path: Path) -> Iterator[RawRecord]:
    """`read_file`, with fatal decode errors delivered as a final `(line, BadRecord)`."""
    try:
        yield from read_file(path)
    except _Fatal as f:
        yield f.line, f.bad


def _read_csv(path: Path) -> Iterator[RawRecord]:
    pending: list[RawRecord] = []

    def lines() -> Iterator[str]:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                text = _decode_line(raw)
                if isinstance(text, BadRecord):
                    pending.append((lineno, text))
                    text = (
                        "\n"  # the csv module skips a blank row: the bad line is reported instead
                    )
                yield text

    reader = csv.DictReader(lines())
    for row in reader:
        yield from pending
        pending.clear()
        yield reader.line_num, {k: v for k, v in row.items() if k is not None}
    yield from pending


def _read_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except pa.ArrowException as exc:  # not Parquet, truncated, or a corrupt page
        where = f"after row {row}" if row else "at its start"
        raise UsageError(
            f"{path}: not a readable Parquet file ({' '.join(str(exc).split())}; {where})"
        ) from None


def _read_txt(path: Path) -> Iterator[RawRecord]:
    para: list[str] = []
    start = 0
    bad: RawRecord | None = None  # a paragraph with an undecodable line is reported at that line
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            text = _decode_line(raw)
            if not isinstance(text, BadRecord) and not text.strip():
                if para or bad:
                    yield bad or (start, {"text": "".join(para).rstrip("\n")})
                para, bad = [], None
                continue
            if not para and not bad:
                start = lineno
            if isinstance(text, BadRecord):
                bad = bad or (lineno, text)
            else:
                para.append(text)
    if para or bad:
        yield bad or (start, {"text": "".join(para).rstrip("\n")})
