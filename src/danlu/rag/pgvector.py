"""`store: pgvector`: the index's record in PostgreSQL, for corpora beyond one machine's memory.

The same record as LocalStore (settings, files with their hash, chunks with text, headings,
BM25 words and vector), in three tables named after `rag_index` (`danlu_<name>_meta`,
`_files`, `_chunks`), changed in one transaction per `danlu rag index`. Dense search is
pgvector's inner product over normalised vectors with an HNSW index (approximate, built and
kept by the server as rows change); lexical search is PostgreSQL's full-text ranking
(`ts_rank_cd`) over the same jieba / lower-cased words in a `simple` tsvector, with a GIN
index: the server-side counterpart of BM25, so neither ranking needs the corpus in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from danlu.rag.store import Hit, StoredChunk, _chunk
from danlu.utils.errors import UsageError


def table_name(index: str) -> str:
    """`rag_index` -> the tables' prefix (letters, digits and _ only)."""
    name = re.sub(r"\W+", "_", index.strip().rstrip("/").rsplit("/", 1)[-1].lower()).strip("_")
    if not name:
        raise UsageError(f"rag_index: {index!r} names no table (use letters, digits, _)")
    return f"danlu_{name[:40]}"


def _lexemes(terms: Sequence[str]) -> list[str]:
    """Terms as hex words: PostgreSQL's text-search parser drops non-ASCII letters under a C
    locale, so Chinese words would vanish; hex survives every locale and parser."""
    return ["w" + t.encode("utf-8").hex() for t in terms]


def _vec(vector: Any) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


SQL = {
    "settings": "SELECT value FROM {t}_meta WHERE key = 'settings'",
    "set": "INSERT INTO {t}_meta VALUES ('settings', %s) "
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    "chunks_table": "CREATE TABLE IF NOT EXISTS {t}_chunks (id bigserial PRIMARY KEY, "
    "source text NOT NULL, ordinal int NOT NULL, headings text NOT NULL, text text NOT NULL, "
    "parent text, digest text NOT NULL, terms text NOT NULL, lexemes text NOT NULL, "
    "lex tsvector GENERATED ALWAYS AS (to_tsvector('simple', lexemes)) STORED, "
    "vector vector({dim}) NOT NULL)",
    "indexes": "CREATE INDEX IF NOT EXISTS {t}_hnsw ON {t}_chunks USING hnsw (vector vector_ip_ops); "
    "CREATE INDEX IF NOT EXISTS {t}_lex ON {t}_chunks USING gin (lex); "
    "CREATE INDEX IF NOT EXISTS {t}_source ON {t}_chunks (source); "
    "CREATE INDEX IF NOT EXISTS {t}_digest ON {t}_chunks (digest)",
    "cached": "SELECT DISTINCT ON (digest) digest, vector::text FROM {t}_chunks "
    "WHERE digest = ANY(%s)",
    "insert": "INSERT INTO {t}_chunks (source, ordinal, headings, text, parent, digest, terms, "
    "lexemes, vector) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::vector)",
    "dense": "SELECT id, -(vector <#> %s::vector) FROM {t}_chunks "
    "ORDER BY vector <#> %s::vector LIMIT %s",
    "lexical": "SELECT id, ts_rank_cd(lex, q) AS r FROM {t}_chunks, "
    "websearch_to_tsquery('simple', %s) q WHERE lex @@ q ORDER BY r DESC, id LIMIT %s",
    "similarity": "SELECT id, -(vector <#> %s::vector) FROM {t}_chunks WHERE id = ANY(%s)",
    "get": "SELECT id, source, ordinal, headings, text, parent, digest, terms FROM {t}_chunks "
    "WHERE id = ANY(%s)",
}
"""The statements, formatted with the index's table prefix (never with user values)."""


class PgVectorStore:
    def __init__(self, dsn: str, index: str, create: bool) -> None:
        from danlu.rag import need

        psycopg = need("psycopg")
        self.t = table_name(index)
        try:
            self.db = psycopg.connect(dsn)
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"pg_dsn: cannot connect: {reason}") from None
        if not self._exists("meta") and not create:
            self.db.close()
            raise UsageError(
                f"rag_index: no index {index!r} in that database (build one with danlu rag index)"
            )
        if create:
            self.db.execute("CREATE EXTENSION IF NOT EXISTS vector")
            self._run(
                "CREATE TABLE IF NOT EXISTS {t}_meta (key text PRIMARY KEY, value text NOT NULL)"
            )
            self._run(
                "CREATE TABLE IF NOT EXISTS {t}_files (source text PRIMARY KEY, digest text NOT NULL)"
            )

    def _run(self, statement: str, params: Any = None, **names: Any) -> Any:
        return self.db.execute(statement.format(t=self.t, **names), params)

    def _exists(self, table: str) -> bool:
        row = self.db.execute("SELECT to_regclass(%s)", (f"{self.t}_{table}",)).fetchone()
        return row[0] is not None

    def settings(self) -> dict | None:
        row = self._run(SQL["settings"]).fetchone()
        return json.loads(row[0]) if row else None

    def set_settings(self, settings: dict) -> None:
        self._run(SQL["set"], (json.dumps(settings, sort_keys=True),))
        self._run(SQL["chunks_table"], dim=int(settings["dim"]))
        self._run(SQL["indexes"])

    def files(self) -> dict[str, str]:
        return dict(self._run("SELECT source, digest FROM {t}_files").fetchall())

    def cached_vectors(self, digests: Sequence[str]) -> dict[str, Any]:
        import numpy as np

        if not self._exists("chunks"):
            return {}
        rows = self._run(SQL["cached"], (list(set(digests)),)).fetchall()
        return {d: np.array(json.loads(v), dtype=np.float32) for d, v in rows}

    def put_file(
        self, source: str, digest: str, chunks: Sequence[StoredChunk], vectors: Any
    ) -> None:
        self.drop_file(source)
        self._run("INSERT INTO {t}_files VALUES (%s, %s)", (source, digest))
        rows = [
            (c.source, c.ordinal, json.dumps(c.headings, ensure_ascii=False), c.text, c.parent,
             c.digest, " ".join(c.terms), " ".join(_lexemes(c.terms)), _vec(vectors[i]))
            for i, c in enumerate(chunks)
        ]  # fmt: skip
        with self.db.cursor() as cur:
            cur.executemany(SQL["insert"].format(t=self.t), rows)

    def drop_file(self, source: str) -> None:
        if self._exists("chunks"):
            self._run("DELETE FROM {t}_chunks WHERE source = %s", (source,))
        self._run("DELETE FROM {t}_files WHERE source = %s", (source,))

    def commit(self) -> None:
        self.db.commit()

    def size(self) -> int:
        if not self._exists("chunks"):
            return 0
        return int(self._run("SELECT count(*) FROM {t}_chunks").fetchone()[0])

    def dense(self, vector: Any, k: int) -> list[Hit]:
        q = _vec(vector)
        return [Hit(int(i), float(s)) for i, s in self._run(SQL["dense"], (q, q, k)).fetchall()]

    def lexical(self, terms: Sequence[str], k: int) -> list[Hit]:
        if not terms:
            return []
        rows = self._run(SQL["lexical"], (" OR ".join(_lexemes(terms)), k)).fetchall()
        return [Hit(int(i), float(s)) for i, s in rows]

    def similarity(self, vector: Any, ids: Sequence[int]) -> dict[int, float]:
        rows = self._run(SQL["similarity"], (_vec(vector), list(ids))).fetchall()
        return {int(i): float(s) for i, s in rows}

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        rows = self._run(SQL["get"], (list(ids),)).fetchall()
        return {int(r[0]): _chunk(r[1:]) for r in rows}

    def close(self) -> None:
        self.db.close()
