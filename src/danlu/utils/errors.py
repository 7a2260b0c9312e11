"""The two kinds of failure a command reports, and the exit codes they map to (DESIGN §1)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path


class DanluError(Exception):
    """Base of every error danlu reports as one line instead of a traceback."""

    exit_code = 1


class UsageError(DanluError):
    """Bad usage or bad input (config, data, arguments): exit code 2.

    The message is one line that names the file, line or key at fault.
    """

    exit_code = 2


class RuntimeFailure(DanluError):
    """Valid input, but the work failed (out of memory, a crashed worker): exit code 1."""

    exit_code = 1


# errno -> (exit code, what to do). Bad paths the user gave are bad input (2); a full, read-only
# or forbidden place is the environment's state (1).
_OS_ADVICE: dict[int, tuple[int, str]] = {
    errno.ENOENT: (2, "check the path"),
    errno.ENOTDIR: (2, "a part of the path is a file, not a folder"),
    errno.EISDIR: (2, "it is a folder; pass a file"),
    errno.EACCES: (1, "check its permissions or choose another place"),
    errno.EPERM: (1, "check its permissions or choose another place"),
    errno.EROFS: (1, "the file system is read-only; choose a writable place"),
    errno.ENOSPC: (1, "the disk is full; free space or choose another place"),
    errno.EDQUOT: (1, "the disk quota is used up; free space or choose another place"),
    errno.EFBIG: (1, "the file is larger than this file system allows; choose another place"),
    errno.EMFILE: (1, "too many open files; raise the limit (ulimit -n)"),
}


def from_environment(exc: BaseException) -> DanluError | None:
    """The one-line error for an exception that comes from the user's files or machine (an
    OSError with an errno we know, anywhere in its chain), or None for anything else: those
    are bugs and keep their traceback."""
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno in _OS_ADVICE:
            code, advice = _OS_ADVICE[cause.errno]
            where = f": {cause.filename}" if cause.filename else ""
            text = f"{cause.strerror or os.strerror(cause.errno)}{where}; {advice}"
            return UsageError(text) if code == 2 else RuntimeFailure(text)
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


RANK_ERRORS = "DANLU_RANK_ERRORS"
"""Set by danlu's launcher to a folder where each rank leaves its one error line."""


def record_for_launcher(error: DanluError) -> bool:
    """Under danlu's launcher, a failing rank writes its line for the launcher to print once,
    as the job's last line (instead of one line per rank, then torchrun's own report)."""
    folder, rank = os.environ.get(RANK_ERRORS), os.environ.get("RANK")
    if not folder or rank is None or not rank.isdigit():
        return False
    record = {"rank": int(rank), "code": error.exit_code, "message": str(error)}
    Path(folder, f"rank-{int(rank):05d}.json").write_text(json.dumps(record))
    return True


def recorded_error(folder: Path) -> DanluError | None:
    """The error of the lowest rank that recorded one, as the error it was."""
    for path in sorted(folder.glob("rank-*.json")):
        record = json.loads(path.read_text())
        cls = UsageError if record["code"] == UsageError.exit_code else RuntimeFailure
        return cls(record["message"])
    return None
