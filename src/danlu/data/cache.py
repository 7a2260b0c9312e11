"""On-disk cache of tokenised sources under `danlu_home()/data/<key>/`.

The key hashes everything the tokens depend on: the data files' bytes, the tokenizer (its full
serialised vocabulary and chat template), the encoder code, template and length settings, the
source's format options and the stage. A cache directory appears only when complete: it is
written under a temporary name and renamed, so a killed run never leaves a half entry behind.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from danlu.utils.system import danlu_home

DATA_FILE = "data.arrow"
STATS_FILE = "stats.json"


def cache_root() -> Path:
    return danlu_home() / "data"


def files_digest(paths: list[Path]) -> str:
    """Content hash of the files (names excluded: a renamed copy is the same data)."""
    h = hashlib.blake2b(digest_size=16)
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        h.update(b"\0file\0")
    return h.hexdigest()


def tokenizer_identity(tokenizer: Any) -> str:
    """Hash of what tokenisation depends on: the serialised tokenizer and its chat template."""
    if tokenizer is None:  # an injected encoder that tokenises by itself
        return "none"
    h = hashlib.blake2b(digest_size=16)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:  # a slow tokenizer: its vocabulary is the best stand-in for its identity
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(str(getattr(tokenizer, "chat_template", None)).encode())
    specials = {k: str(v) for k, v in getattr(tokenizer, "special_tokens_map", {}).items()}
    h.update(json.dumps(specials, sort_keys=True).encode())
    return h.hexdigest()


def encoder_identity(factory: Callable) -> str:
    """Name plus source hash of the encoder factory's module (a code change invalidates)."""
    module = inspect.getmodule(factory)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{factory.__module__}.{getattr(factory, '__qualname__', factory)}".encode())
    for name in getattr(factory, "code_modules", ()) or ([module.__name__] if module else []):
        mod = __import__(name, fromlist=["_"])
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def lookup(key: str) -> Path | None:
    """The complete cache directory for `key`, or None."""
    path = cache_root() / key
    return path if (path / STATS_FILE).is_file() and (path / DATA_FILE).is_file() else None


def new_entry(key: str) -> Path:
    """A private temporary directory next to the final one (same filesystem: rename is atomic)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))


def commit(tmp: Path, key: str, stats: dict[str, Any]) -> Path:
    """Write stats last and rename `tmp` to the key; a concurrent winner's entry is kept."""
    (tmp / STATS_FILE).write_text(json.dumps(stats, ensure_ascii=False), encoding="utf-8")
    final = cache_root() / key
    if final.exists():  # an older or concurrent entry: replace it (stale entries are rewritten)
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:  # another process committed the same key between rmtree and rename
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_stats(entry: Path) -> dict[str, Any]:
    return json.loads((entry / STATS_FILE).read_text(encoding="utf-8"))
