"""Facts about the machine that several layers need: usable CPU cores, RAM, thread setup."""

from __future__ import annotations

import os
from pathlib import Path


def available_cpus() -> int:
    """Cores this process may really use: affinity mask, capped by a cgroup CPU quota.

    `os.cpu_count()` reports the host's cores; in containers and CI the affinity mask or the
    cgroup quota is smaller, and oversubscribing threads made runs here 4-7x slower.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = max(1, min(n, int(quota + 0.5)))
    return n


def _cgroup_cpu_quota() -> float | None:
    path = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "max 100000" or "200000 100000"
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads to `threads`, or to the usable cores when 0. Returns it.

    Several training processes on one node share its cores: each takes its part, or they
    oversubscribe them (torchrun's own answer, one thread each, leaves CPU runs idle).
    """
    import torch

    per_node = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("WORLD_SIZE") or 1)
    n = threads if threads > 0 else max(available_cpus() // per_node, 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def danlu_home() -> Path:
    """Cache root: `$DANLU_HOME`, else `~/.cache/danlu`."""
    return Path(os.environ.get("DANLU_HOME") or Path.home() / ".cache" / "danlu").expanduser()


def total_ram_bytes() -> int:
    import psutil

    return psutil.virtual_memory().total
