"""Knowledge enhancement (DESIGN §10): documents -> an index -> passages that ground answers.

loaders (files -> sections) -> split (sections -> chunks) -> embed (chunks -> vectors) ->
store (the record, FAISS and BM25) -> retrieve (hybrid search) -> ask (the grounded prompt).
The CLI, the server and the eval task call `open_index` and `Retriever.search` alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError

_PIP = {"faiss": "faiss-cpu", "sentence_transformers": "sentence-transformers", "bm25s": "bm25s",
        "jieba": "jieba", "psycopg": "psycopg[binary]"}  # fmt: skip


def need(module: str) -> Any:
    """Import one of the rag extra's libraries, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(
            f"danlu rag needs {_PIP.get(module, module)}: pip install 'danlu[rag]'"
        ) from None


def open_store(cfg: Any, create: bool) -> Any:
    """The index's store: the folder `rag_index` (faiss), or its tables at `pg_dsn` (pgvector)."""
    if cfg.store == "pgvector":
        from danlu.rag.pgvector import PgVectorStore

        return PgVectorStore(cfg.pg_dsn, cfg.rag_index, create=create)
    from danlu.rag.store import LocalStore

    return LocalStore(Path(cfg.rag_index).expanduser(), create=create)


def open_index(cfg: Any) -> tuple[Any, Any, Any]:
    """(store, embedder, retriever) of an existing index, with the embedding model it was built
    with (an explicit embedding_model must be that one)."""
    from danlu.rag.embed import Embedder
    from danlu.rag.index import check_settings, settings_of
    from danlu.rag.retrieve import Retriever

    store = open_store(cfg, create=False)
    recorded = store.settings()
    if recorded is None or store.size() == 0:
        store.close()
        raise UsageError(f"rag_index: {cfg.rag_index}: the index is empty (run danlu rag index)")
    spec = recorded["embedding_model"] if cfg.embedding_model == "auto" else cfg.embedding_model
    embedder = Embedder(spec, cfg.embedding_batch_size)
    wanted = {**settings_of(cfg, embedder), **_split_settings(recorded)}
    check_settings(recorded, wanted, f"index {cfg.rag_index}")
    return store, embedder, Retriever(cfg, store, embedder)


def _split_settings(recorded: dict) -> dict:
    """Asking does not re-split: the index's own chunking settings stand."""
    return {k: recorded[k] for k in ("chunk_size", "chunk_overlap", "parent_chunk_size")}
