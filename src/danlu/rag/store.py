"""Where an index lives: one small interface, two stores.

`LocalStore` (the default, `store: faiss`) keeps everything in the index folder: an SQLite
database is the record (settings, files with their content hash, chunks with their text,
heading path, BM25 terms and vector), changed in one transaction per `danlu rag index`, so a
crash leaves the previous index intact. The FAISS index (exact inner product over normalised
vectors, `IndexIDMap2(IndexFlatIP)`: exact recall, deletions by id, and at a million 384-wide
chunks 1.5 GB and tens of milliseconds a query on a CPU) and the BM25 index are derived from
it, written under a generation number after the commit and rebuilt whenever their generation
is not the database's. `PgVectorStore` (rag/pgvector.py) keeps the same record in
PostgreSQL for corpora that outgrow one machine.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from danlu.utils.errors import UsageError


@dataclass(frozen=True)
class StoredChunk:
    source: str
    """The file, as danlu shows it."""
    ordinal: int
    """Its place in the file (the `#N` of `file#N`)."""
    headings: tuple[str, ...]
    text: str
    parent: str | None
    digest: str
    """sha256 of the embedded text: the embedding cache key."""
    terms: tuple[str, ...]


@dataclass(frozen=True)
class Hit:
    id: int
    score: float


class Store(Protocol):
    def settings(self) -> dict | None: ...
    def set_settings(self, settings: dict) -> None: ...
    def files(self) -> dict[str, str]: ...
    def cached_vectors(self, digests: Sequence[str]) -> dict[str, Any]: ...
    def put_file(
        self, source: str, digest: str, chunks: Sequence[StoredChunk], vectors: Any
    ) -> None: ...
    def drop_file(self, source: str) -> None: ...
    def commit(self) -> None: ...
    def dense(self, vector: Any, k: int) -> list[Hit]: ...
    def lexical(self, terms: Sequence[str], k: int) -> list[Hit]: ...
    def similarity(self, vector: Any, ids: Sequence[int]) -> dict[int, float]: ...
    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]: ...
    def size(self) -> int: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (source TEXT PRIMARY KEY, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, ordinal INTEGER NOT NULL,
    headings TEXT NOT NULL, text TEXT NOT NULL, parent TEXT, digest TEXT NOT NULL,
    terms TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks (source);
CREATE INDEX IF NOT EXISTS chunks_digest ON chunks (digest);
"""


class LocalStore:
    DB = "index.sqlite"

    def __init__(self, folder: Path, create: bool) -> None:
        self.folder = folder
        db = folder / self.DB
        if not db.is_file() and not create:
            raise UsageError(f"index: {folder}: no index there (build one with danlu rag index)")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            # check_same_thread off: the server retrieves on worker threads, one at a time
            self.db = sqlite3.connect(db, isolation_level="DEFERRED", check_same_thread=False)
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"index: {db}: not a danlu index ({exc})") from exc
        self._dense: Any = None
        self._lexical: Any = None

    # --- the record ---------------------------------------------------------------------------

    def settings(self) -> dict | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
        return json.loads(row[0]) if row else None

    def set_settings(self, settings: dict) -> None:
        self._meta("settings", json.dumps(settings, sort_keys=True))

    def _meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def generation(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def files(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT source, digest FROM files"))

    def cached_vectors(self, digests: Sequence[str]) -> dict[str, Any]:
        import numpy as np

        rows = self._rows_in("SELECT digest, vector FROM chunks WHERE digest", sorted(set(digests)))
        return {digest: np.frombuffer(blob, dtype=np.float32) for digest, blob in rows}

    def put_file(
        self, source: str, digest: str, chunks: Sequence[StoredChunk], vectors: Any
    ) -> None:
        self.drop_file(source)
        self.db.execute("INSERT INTO files VALUES (?, ?)", (source, digest))
        rows = [
            (c.source, c.ordinal, json.dumps(c.headings, ensure_ascii=False), c.text, c.parent,
             c.digest, " ".join(c.terms), vectors[i].astype("float32").tobytes())
            for i, c in enumerate(chunks)
        ]  # fmt: skip
        self.db.executemany(
            "INSERT INTO chunks (source, ordinal, headings, text, parent, digest, terms, vector) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def drop_file(self, source: str) -> None:
        self.db.execute("DELETE FROM chunks WHERE source = ?", (source,))
        self.db.execute("DELETE FROM files WHERE source = ?", (source,))

    def commit(self) -> None:
        """The new record in one transaction, then its derived indexes."""
        self._meta("generation", str(self.generation() + 1))
        self.db.commit()
        self._dense = self._lexical = None
        self._derived()

    def size(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        query = (
            "SELECT id, source, ordinal, headings, text, parent, digest, terms FROM chunks WHERE id"
        )
        return {row[0]: _chunk(row[1:]) for row in self._rows_in(query, ids)}

    def _rows_in(self, query: str, values: Sequence[Any]) -> Iterator[tuple]:
        """`query IN (values)`, 500 values a statement (SQLite's bound-parameter limit)."""
        values = list(values)
        for start in range(0, len(values), 500):
            part = values[start : start + 500]
            yield from self.db.execute(f"{query} IN ({','.join('?' * len(part))})", part)

    def close(self) -> None:
        self.db.close()

    # --- derived indexes ----------------------------------------------------------------------

    def dense(self, vector: Any, k: int) -> list[Hit]:
        index = self._derived()[0]
        if index.ntotal == 0:
            return []
        scores, ids = index.search(vector.reshape(1, -1).astype("float32"), min(k, index.ntotal))
        return [Hit(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]

    def lexical(self, terms: Sequence[str], k: int) -> list[Hit]:
        bm25, ids = self._derived()[1]
        return [Hit(ids[pos], score) for pos, score in bm25.top(terms, k)]

    def similarity(self, vector: Any, ids: Sequence[int]) -> dict[int, float]:
        """Cosine of `vector` with each chunk (the vectors are normalised)."""
        import numpy as np

        rows = self._rows_in("SELECT id, vector FROM chunks WHERE id", ids)
        return {i: float(np.frombuffer(blob, dtype=np.float32) @ vector) for i, blob in rows}

    def _derived(self) -> tuple[Any, Any]:
        """(FAISS index, (BM25, chunk ids)) of this generation: loaded, or rebuilt and saved."""
        if self._dense is not None:
            return self._dense, self._lexical
        from danlu.rag import need

        faiss = need("faiss")

        gen = self.generation()
        path = self.folder / f"dense-{gen}.faiss"
        if path.is_file():
            self._dense = faiss.read_index(str(path))
        else:
            self._dense = self._build_dense()
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            faiss.write_index(self._dense, str(tmp))
            tmp.replace(path)
            for old in self.folder.glob("dense-*.faiss"):
                if old != path:
                    old.unlink(missing_ok=True)
        self._lexical = self._build_lexical()
        return self._dense, self._lexical

    def _build_dense(self) -> Any:
        import numpy as np

        from danlu.rag import need

        faiss = need("faiss")
        dim = int((self.settings() or {}).get("dim", 0))
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        rows = self.db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        if rows:
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            index.add_with_ids(vectors, ids)
        return index

    def _build_lexical(self) -> tuple[Any, list[int]]:
        """BM25 over the stored terms (bm25s indexes ~100k chunks a second: rebuilt at open)."""
        from danlu.rag.lexical import Bm25

        rows = self.db.execute("SELECT id, terms FROM chunks ORDER BY id").fetchall()
        return Bm25([r[1].split() for r in rows]), [r[0] for r in rows]


def _chunk(row: Sequence[Any]) -> StoredChunk:
    source, ordinal, headings, text, parent, digest, terms = row
    return StoredChunk(source, ordinal, tuple(json.loads(headings)), text, parent, digest,
                       tuple(terms.split()))  # fmt: skip
