"""`danlu rag index`: the documents -> an index, incrementally.

Every file is hashed; a file whose hash the index already has is left alone, a changed one has
its chunks replaced, a new one is added, and an indexed file no longer found under `rag_docs`
is removed. Chunks are embedded in batches across files, and a chunk whose text the index
already holds (an unchanged paragraph of an edited file, a file moved) reuses its vector. A
file that cannot be read is named with the reason and skipped (its earlier chunks, if any,
stay); the rest is indexed. All changes land in one transaction.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from danlu.rag.loaders import LoadError, find_files, load
from danlu.rag.store import StoredChunk
from danlu.utils.errors import UsageError

BATCH_CHUNKS = 256
"""Chunks gathered (across files) before they are embedded together."""
VERSION = 1


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    chunks: int = 0
    """Chunks in the index afterwards."""
    embedded: int = 0
    """Chunks embedded in this run (the others' vectors were reused)."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file, why) of the files that could not be read."""
    passed_over: int = 0
    """Files in the folders with a suffix danlu does not read."""
    seconds: float = 0.0

    def summary(self) -> str:
        line = (f"{self.added} added, {self.updated} updated, {self.removed} removed, "
                f"{self.unchanged} unchanged; {self.chunks} chunks ({self.embedded} embedded) "
                f"in {self.seconds:.1f} s")  # fmt: skip
        if self.skipped:
            line += f"; {len(self.skipped)} file(s) skipped"
        if self.passed_over:
            line += f"; {self.passed_over} file(s) of other types passed over"
        return line


def settings_of(cfg: Any, embedder: Any) -> dict:
    """What an index is built with; a later run with other values is refused."""
    return {"version": VERSION, "embedding_model": embedder.name,
            "embedding_fingerprint": embedder.fingerprint, "dim": embedder.dim,
            "chunk_size": cfg.chunk_size, "chunk_overlap": cfg.chunk_overlap,
            "parent_chunk_size": cfg.parent_chunk_size}  # fmt: skip


def check_settings(recorded: dict | None, wanted: dict, where: str) -> None:
    if recorded is None:
        return
    for key, value in wanted.items():
        if recorded.get(key) != value:
            raise UsageError(
                f"{where}: built with {key} {recorded.get(key)!r}, this run has {value!r}; an "
                "index never mixes them: use another rag_index, or delete it to rebuild"
            )


def display_name(path: Path) -> str:
    """A file as the index shows it: relative to the working directory when under it."""
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else Path(rel).as_posix()


def build_index(
    cfg: Any, embedder: Any, store: Any, log: Callable[[str], None], found: tuple | None = None
) -> IndexReport:
    """Update `store` to mirror rag_docs; `found`: scan_docs(cfg), when already taken."""
    start = time.perf_counter()
    files, report = found or scan_docs(cfg)
    _check_window(cfg, embedder)
    check_settings(store.settings(), settings_of(cfg, embedder), f"index {cfg.rag_index}")
    store.set_settings(settings_of(cfg, embedder))
    known = store.files()
    pending = _Pending(store, embedder)
    seen: set[str] = set()
    for path in files:
        source = display_name(path)
        seen.add(source)
        _index_file(cfg, path, source, known, pending, report, embedder, log)
    pending.flush()
    for source in sorted(set(known) - seen):
        store.drop_file(source)
        report.removed += 1
    report.embedded = pending.embedded
    store.commit()
    report.chunks = store.size()
    if report.chunks == 0:
        raise UsageError(f"rag_docs: no text found to index in {', '.join(cfg.rag_docs)}")
    report.seconds = time.perf_counter() - start
    return report


def scan_docs(cfg: Any) -> tuple[list[Path], IndexReport]:
    """(the files to index, a report counting the others); UsageError for missing paths or
    nothing to read, before any index is created."""
    if not cfg.rag_docs:
        raise UsageError("rag_docs: nothing to index (pass --docs PATH...)")
    files, other = find_files(cfg.rag_docs)
    if not files:
        raise UsageError(
            f"rag_docs: no .txt/.md/.html/.pdf/.docx/.jsonl file in {', '.join(cfg.rag_docs)}"
        )
    return files, IndexReport(passed_over=other)


def _check_window(cfg: Any, embedder: Any) -> None:
    if cfg.chunk_size > embedder.max_tokens:
        raise UsageError(
            f"chunk_size: {cfg.chunk_size} tokens is more than the embedding model's window of "
            f"{embedder.max_tokens}: the end of every long chunk would never be embedded"
        )


def _index_file(cfg: Any, path: Path, source: str, known: dict, pending: _Pending,
                report: IndexReport, embedder: Any, log: Callable[[str], None]) -> None:  # fmt: skip
    from danlu.rag.lexical import words
    from danlu.rag.split import split

    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if known.get(source) == digest:
        report.unchanged += 1
        return
    try:
        sections = load(path)
    except LoadError as exc:
        report.skipped.append((source, str(exc)))
        log(f"skipped {source}: {exc}")
        return
    chunks = split(
        sections, embedder.count, cfg.chunk_size, cfg.chunk_overlap, cfg.parent_chunk_size
    )
    stored = [
        StoredChunk(source, i, c.headings, c.text, c.parent, _sha(c.embedded_text()),
                    tuple(words(c.embedded_text())))
        for i, c in enumerate(chunks)
    ]  # fmt: skip
    if source in known:
        report.updated += 1
    else:
        report.added += 1
    pending.add(source, digest, stored, [c.embedded_text() for c in chunks])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Pending:
    """Files waiting for their vectors: embedded together once enough chunks have gathered."""

    def __init__(self, store: Any, embedder: Any) -> None:
        self.store, self.embedder = store, embedder
        self.files: list[tuple[str, str, list[StoredChunk], list[str]]] = []
        self.chunks = 0
        self.embedded = 0

    def add(self, source: str, digest: str, chunks: list[StoredChunk], texts: list[str]) -> None:
        self.files.append((source, digest, chunks, texts))
        self.chunks += len(chunks)
        if self.chunks >= BATCH_CHUNKS:
            self.flush()

    def flush(self) -> None:
        import numpy as np

        digests = [c.digest for f in self.files for c in f[2]]
        vectors = self.store.cached_vectors(digests)
        missing = {c.digest: t for f in self.files for c, t in zip(f[2], f[3], strict=True)
                   if c.digest not in vectors}  # fmt: skip
        if missing:
            fresh = self.embedder.passages(list(missing.values()))
            vectors.update(zip(missing, fresh, strict=True))
            self.embedded += len(missing)
        dim = self.embedder.dim
        for source, digest, chunks, _ in self.files:
            rows = np.stack([vectors[c.digest] for c in chunks]) if chunks else np.zeros((0, dim))
            self.store.put_file(source, digest, chunks, rows)
        self.files, self.chunks = [], 0
