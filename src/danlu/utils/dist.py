"""Process-group facts and the few collectives the engine needs, safe to call without one.

Every helper answers for a single process when torch.distributed is not initialised, so code that
calls them runs unchanged on one device, under torchrun, and under the DeepSpeed launcher.
"""

from __future__ import annotations

import os
from typing import Any


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def world_size() -> int:
    """Processes in the job, from the launcher's environment (before the group exists too)."""
    return env_int("WORLD_SIZE", 1)


def rank() -> int:
    return env_int("RANK", 0)


def local_rank() -> int:
    return env_int("LOCAL_RANK", 0)


def local_world_size() -> int:
    """Processes on this node (torchrun sets LOCAL_WORLD_SIZE; DeepSpeed's launcher does not)."""
    return env_int("LOCAL_WORLD_SIZE", world_size())


def launched() -> bool:
    """True inside a process started by torchrun, accelerate or the DeepSpeed launcher."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def is_main() -> bool:
    return rank() == 0


def _group() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def barrier() -> None:
    dist = _group()
    if dist is not None:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled; for small things such as a path)."""
    dist = _group()
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (float64; on the process's GPU when the backend is nccl, which
    cannot reduce CPU tensors)."""
    dist = _group()
    if dist is None:
        return list(values)
    import torch

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
