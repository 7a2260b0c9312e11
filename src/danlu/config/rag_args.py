"""Config section of `danlu rag` (DESIGN §10): what is indexed and how, and how it is asked.

`danlu rag index` and `danlu rag ask` take these keys from a YAML file or `key=value`; their
flags (`--docs`, `--index`, `--top-k`) are shorthands for `rag_docs`, `rag_index`, `top_k`.
The same keys ground `danlu serve --rag-index`. Ranges and cross-key rules: `rules.RULES`.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from danlu.config import eval_args as _eval_args  # noqa: F401  (earlier sections come first in dumps)
from danlu.config.schema import section


@section("rag")
class RagArgs:
    rag_docs: list[str] = field(default_factory=list)
    """Files and folders to index (.txt .md .html .pdf .docx .jsonl; folders recursively). The
    index mirrors them: files no longer found under these paths are removed from it."""
    rag_index: str = "runs/rag-index"
    """The index folder (store faiss) or the name it is recorded under (store pgvector)."""
    embedding_model: str = "auto"
    """A sentence-transformers folder (bge-*, m3e, text2vec, multilingual MiniLM...), or auto:
    the embedded all-MiniLM-L6-v2 (English; see the README for Chinese corpora)."""
    embedding_batch_size: int = 32
    """Passages embedded per batch."""
    chunk_size: int = 200
    """Most tokens of the embedding model in a chunk (heading path included); at most the
    model's window (256 for the default)."""
    chunk_overlap: int = 32
    """Tokens of whole sentences repeated from the end of one chunk at the start of the next."""
    parent_chunk_size: int = 0
    """> 0: retrieve small chunks but answer with their enclosing passage of this many tokens
    (parent-child chunks). 0 = answer with the chunk itself."""
    store: Literal["faiss", "pgvector"] = "faiss"
    """faiss: SQLite + FAISS files in `rag_index` (one machine); pgvector: PostgreSQL with the
    pgvector extension at `pg_dsn` (corpora beyond one machine's memory)."""
    pg_dsn: str | None = None
    """PostgreSQL connection string for store pgvector, e.g. postgresql://user@host/db."""
    store: Literal["faiss", "pgvector"] = "faiss"
    """faiss: SQLite + FAISS files in the folder `rag_index` (one machine); pgvector: tables
    named after `rag_index` in the PostgreSQL database at `pg_dsn` (HNSW and full-text indexes
    in the server: corpora beyond one machine's memory)."""
    pg_dsn: str | None = None
    """PostgreSQL connection string for store pgvector, e.g. postgresql://user@host:5432/db."""
    retrieval: Literal["hybrid", "dense", "bm25"] = "hybrid"
    """hybrid: dense and BM25 (jieba words for Chinese) fused by reciprocal rank; or one alone."""
    top_k: int = 4
    """Passages given to the model (and returned with the answer)."""
    rrf_k: int = 60
    """Reciprocal-rank fusion constant: a passage scores sum(1 / (rrf_k + rank))."""
    reranker: str | None = None
    """A sentence-transformers cross-encoder folder (bge-reranker...) that reorders the fused
    candidates; None = no reranking."""
    score_threshold: float = 0.0
    """Below this best passage score (cosine of the dense match, or the reranker's score),
    `ask` answers that the documents do not say, without calling the model. 0 = off."""
    rag_template: str | None = None
    """The prompt: a file or text with {context} and {question}. None = the seeds' Chinese
    template (已知信息...) for Chinese questions, its English counterpart otherwise."""
    rag_max_new_tokens: int = 512
    """Most tokens in an answer."""
    retrieval_data: str | None = None
    """`danlu eval` task retrieval: jsonl of {"question", "source"} (a file name, or file#N for
    one chunk); recall@top_k and MRR of the index in hybrid, dense and bm25 mode. Records with
    an "answer" are also answered by each model from the retrieved passages and scored
    (contains, exact match, BLEU-4, ROUGE)."""
