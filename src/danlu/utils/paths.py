"""Where a command will write: checked before any heavy work, with nothing written there."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from danlu.utils.errors import RuntimeFailure, UsageError


def check_writable_dir(path: Path, key: str) -> None:
    """`path` is a folder (or can be made one) that this process may write in.

    The probe is a temporary folder made and removed in the nearest existing ancestor, so
    `path` itself is untouched until the command's checks have all passed. Errors name `key`
    (the config key or option the path came from).
    """
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{key}: {path} is a file, not a folder; choose another path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{key}: {existing} is a file, so {path} cannot be made a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".danlu-write-probe-", dir=existing))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RuntimeFailure(
            f"{key}: cannot write in {existing} ({reason}); choose a writable place"
        ) from None
