"""Words for BM25: jieba's segmentation for Chinese runs, lower-cased word pieces for the rest.

Dense embeddings miss exact names, numbers and rare terms, and a small English embedder misses
Chinese altogether; BM25 on words catches those. Chinese has no spaces, so runs of CJK
characters are cut with jieba (search mode: "绿茶冲泡" also yields "绿茶", "冲泡"); other
text is split into letters/digits runs, lower-cased. Punctuation and a short stop list are
dropped. The scoring itself is bm25s's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[A-Za-z0-9_]+(?:['.][A-Za-z0-9_]+)*")
_STOP_WORDS = (
    "a an the of to in on and or is are was were be for with as by at it this that what how "
    "的 了 是 在 和 与 及 或 吗 呢 吧 啊 也 就 都 而 之"
)
STOP = frozenset(_STOP_WORDS.split())


def words(text: str) -> list[str]:
    """The BM25 terms of `text`, in order."""
    out: list[str] = []
    for match in _RUN.finditer(text):
        run = match.group(0)
        if run[0].isascii():
            out.append(run.lower())
        else:
            out += _jieba().lcut_for_search(run)
    return [w for w in out if w not in STOP]


def _jieba() -> Any:
    import logging

    from danlu.rag import need

    jieba = need("jieba")
    jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict" lines are not the user's
    return jieba


class Bm25:
    """BM25 (Lucene's variant, k1 1.5, b 0.75) over chunks given as term lists."""

    def __init__(self, docs: Sequence[Sequence[str]]) -> None:
        from danlu.rag import need

        bm25s = need("bm25s")
        self.size = len(docs)
        self._index = bm25s.BM25()
        if docs:
            self._index.index([list(d) or [""] for d in docs], show_progress=False)

    def top(self, terms: Sequence[str], k: int) -> list[tuple[int, float]]:
        """(position in `docs`, score) of the k best documents with a score above 0."""
        import numpy as np

        known = [t for t in terms if t in getattr(self._index, "vocab_dict", {})]
        if not self.size or not known:
            return []
        scores = self._index.get_scores(known)
        k = min(k, self.size)
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(i), float(scores[i])) for i in best if scores[i] > 0]
