"""The two kinds of failure a command reports, and the exit codes they map to (DESIGN §1)."""

from __future__ import annotations


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
