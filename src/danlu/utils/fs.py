"""Folders that appear complete or not at all: model conversions, merges, checkpoints."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

# What storage errors say when they reach us as text rather than as an OSError (safetensors
# raises `SafetensorError("... No space left on device (os error 28)")`).
_STORAGE_PHRASES = re.compile(r"No space left on device|Disk quota exceeded|File too large")
# torch.save's zip writer reports a failed write without its errno (ENOSPC gives
# "[enforce fail at inline_container.cc:...] unexpected pos ...").
_TORCH_WRITER = ("inline_container.cc", "PytorchStreamWriter")
_NEARLY_FULL = 1 << 20  # bytes available below which a write that failed ran out of space


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
    _fsync_dir(dest.parent)  # the rename itself must survive a power cut too
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


def storage_failure(exc: BaseException, folder: Path) -> str | None:
    """Why writing into `folder` failed, if `exc` is a storage failure; None for anything else.

    Disk full and its kin reach us in three shapes: an OSError (plain writes), a message
    (safetensors), or torch's zip writer's errno-less RuntimeError; for the last, the free space
    left on `folder`'s filesystem tells a full disk from another failed write. Call it before
    removing the partial files: they are what filled the disk.
    """
    chain = list(_chain(exc))
    for err in chain:
        if isinstance(err, OSError):
            return os.strerror(err.errno) if err.errno else error_line(err)
        if found := _STORAGE_PHRASES.search(str(err)):
            return found.group(0)
    for err in chain:
        if any(mark in str(err) for mark in _TORCH_WRITER):
            if _available_bytes(folder) < _NEARLY_FULL:
                return os.strerror(errno.ENOSPC)
            return f"the write failed ({error_line(err)})"
    return None


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """`exc`, then the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def error_line(err: BaseException) -> str:
    """An exception's message as one line (its first), for messages that must be one line."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _available_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on `folder`'s filesystem (nearest existing)."""
    path = folder
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
