"""Folders that appear complete or not at all: model conversions, merges, checkpoints."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a temp folder beside `dest`; on success it replaces `dest` in one rename.

    On any exception (KeyboardInterrupt included) the temp folder is removed and `dest` is left
    as it was. A SIGKILL cannot clean up: it leaves a `.NAME.tmp-*` sibling, never `dest`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the result should look like any mkdir
    try:
        yield tmp
        publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(staged: Path, dest: Path) -> Path:
    """Move a fully written folder to `dest` (same filesystem), replacing what was there."""
    fsync_tree(staged)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staged, dest)
    return dest


def fsync_tree(folder: Path) -> None:
    """Flush file contents before a rename publishes them (a power cut must not publish zeros)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def remove_leftovers(dest: Path) -> None:
    """Delete temp siblings of `dest` left by killed writers; call only while no writer runs."""
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
