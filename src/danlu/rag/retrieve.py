"""A question -> the passages that answer it: dense and BM25 candidates, fused by reciprocal
rank (Cormack et al. 2009: a passage scores sum 1 / (rrf_k + rank) over the lists it is in, so
neither list's score scale matters), optionally reordered by a cross-encoder.

Each passage's `score` is what a threshold can be set on: the reranker's score when there is
one, else the cosine similarity of the question and the chunk (BM25's score in bm25-only mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from danlu.rag.lexical import words
from danlu.rag.store import StoredChunk

CANDIDATES = 5
"""Candidates taken from each list per passage returned (at least 20)."""


@dataclass(frozen=True)
class Passage:
    source: str
    """`file#N`: the file and the chunk's place in it."""
    text: str
    """What the model is given: the chunk (its parent passage with parent-child chunks)."""
    score: float
    headings: tuple[str, ...] = ()

    def as_json(self) -> dict:
        return {"source": self.source, "text": self.text, "score": round(self.score, 4),
                "headings": list(self.headings)}  # fmt: skip


def fuse(lists: list[list[int]], k: int) -> list[int]:
    """Reciprocal-rank fusion of ranked id lists (best first); ties keep first-seen order."""
    scores: dict[int, float] = {}
    for ranked in lists:
        for rank, item in enumerate(ranked, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda i: -scores[i])


class Retriever:
    def __init__(self, cfg: Any, store: Any, embedder: Any) -> None:
        self.cfg, self.store, self.embedder = cfg, store, embedder

    @cached_property
    def reranker(self) -> Any:
        from danlu.rag import need

        CrossEncoder = need("sentence_transformers").CrossEncoder
        return CrossEncoder(self.cfg.reranker, device="cpu", local_files_only=True)

    def search(
        self, question: str, top_k: int | None = None, mode: str | None = None
    ) -> list[Passage]:
        """The best `top_k` passages for `question` (`mode`: the config's `retrieval` unless
        given)."""
        top_k = top_k or self.cfg.top_k
        n = max(20, CANDIDATES * top_k)
        mode = mode or self.cfg.retrieval
        vector = self.embedder.queries([question])[0] if mode != "bm25" else None
        lists = []
        if vector is not None:
            lists.append([h.id for h in self.store.dense(vector, n)])
        lexical = {}
        if mode != "dense":
            hits = self.store.lexical(words(question), n)
            lexical = {h.id: h.score for h in hits}
            lists.append([h.id for h in hits])
        ranked = fuse(lists, self.cfg.rrf_k)
        chunks = self.store.chunks(ranked)
        if self.cfg.reranker:
            scored = self._rerank(question, ranked, chunks)
        elif vector is not None:
            sims = self.store.similarity(vector, ranked)
            scored = [(i, sims.get(i, 0.0)) for i in ranked]
        else:
            scored = [(i, lexical[i]) for i in ranked]
        return _passages(scored, chunks, top_k)

    def _rerank(self, question: str, ranked: list[int], chunks: dict) -> list[tuple[int, float]]:
        pairs = [(question, chunks[i].text) for i in ranked]
        scores = self.reranker.predict(pairs, show_progress_bar=False) if pairs else []
        return sorted(zip(ranked, (float(s) for s in scores), strict=True), key=lambda x: -x[1])


def _passages(
    scored: list[tuple[int, float]], chunks: dict[int, StoredChunk], top_k: int
) -> list[Passage]:
    """The first top_k distinct passages (children of one parent count once)."""
    out: list[Passage] = []
    given: set[str] = set()
    for chunk_id, score in scored:
        chunk = chunks.get(chunk_id)
        if chunk is None:
            continue
        text = chunk.parent or chunk.text
        if text in given:
            continue
        given.add(text)
        out.append(Passage(f"{chunk.source}#{chunk.ordinal}", text, score, chunk.headings))
        if len(out) == top_k:
            break
    return out
