"""Bad records: one exception type carrying a counting reason, and the `on_bad_record` policy.

A bad record is never dropped silently (DESIGN §3): with `on_bad_record: error` the first one
stops the run with a one-line UsageError naming `file:line` and the problem; with `skip` it is
counted under its reason and the count lands in data_report.json.
"""

from __future__ import annotations

from collections import Counter

from danlu.utils.errors import UsageError


class BadRecord(Exception):
    """One record cannot be used. `reason` is the short key it is counted under in reports."""

    def __init__(self, reason: str, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.fatal = fatal
        """True when reading cannot go on past it (e.g. a syntax error inside a JSON array)."""


class BadRecordPolicy:
    """Applies `on_bad_record` to each bad record and keeps the skip counts by reason."""

    def __init__(self, mode: str = "error") -> None:
        if mode not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be error or skip, got {mode!r}")
        self.mode = mode
        self.skipped: Counter[str] = Counter()
        self.first: dict[str, str] = {}
        """reason -> the first `file:line` skipped for it, so a report can point at an example."""

    def handle(self, where: str, bad: BadRecord) -> None:
        """Raise (error mode, or a fatal problem) or count the record as skipped."""
        if self.mode == "error" or bad.fatal:
            raise UsageError(f"{where}: {bad.message}")
        self.skipped[bad.reason] += 1
        self.first.setdefault(bad.reason, where)
