"""Run-directory checkpoints (DESIGN §5): complete or absent, never half-written.

Trainer writes a checkpoint under `checkpoints/.staging/`, and it is renamed to
`checkpoints/step-N` only once every file is on disk, so a crash or SIGKILL mid-save leaves at
most a staged folder, which is ignored (and cleaned when the run starts again). `resume_from_checkpoint: auto` picks the newest
`step-N`; an explicit path must be a complete checkpoint.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from danlu.train.fsdp import TRAINABLE
from danlu.utils.errors import UsageError
from danlu.utils.fs import atomic_dir, publish

__all__ = ["atomic_dir", "publish"]  # re-exported for callers that think in checkpoints

_STEP = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def staging_dir(output_dir: str | Path) -> Path:
    """Where Trainer writes a checkpoint before it is published as step-N."""
    return checkpoints_dir(output_dir) / ".staging"


def step_of(folder: Path) -> int | None:
    """N of a `step-N` folder; None for anything else."""
    m = _STEP.match(folder.name)
    return int(m.group(1)) if m else None


def complete_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    return sorted((step, p) for p in root.iterdir() if (step := step_of(p)) is not None)


def resolve_resume(value: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: None, `auto` (newest, if any) or an explicit folder."""
    if value is None:
        return None
    if value == "auto":
        found = complete_checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(value).expanduser()
    if not (path / STATE_FILE).is_file():
        raise UsageError(
            f"resume_from_checkpoint: {value} is not a complete checkpoint (no {STATE_FILE})"
        )
    return path


def rotate(output_dir: str | Path, keep: int | None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond `keep`; also drop dead temp folders."""
    root = checkpoints_dir(output_dir)
    for stale in root.glob(".step-*.tmp-*") if root.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)
    found = complete_checkpoints(output_dir)
    if keep is None or len(found) <= keep:
        return []
    doomed = [p for _, p in found[: len(found) - keep]]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def writer_of(folder: Path) -> tuple[str, int]:
    """Which strategy wrote a checkpoint: ("deepspeed", ranks) | ("fsdp", 0) | ("plain", 0)."""
    latest = folder / "latest"
    if latest.is_file():  # DeepSpeed's tag file; one optimizer shard per data-parallel rank
        shards = list((folder / latest.read_text().strip()).glob("*optim_states.pt"))
        return "deepspeed", len(shards)
    if (folder / TRAINABLE).is_file():
        return "fsdp", 0
    return "plain", 0


def check_resumable(folder: Path, strategy: str, world: int) -> None:
    """Refuse a resume that would silently start a fresh optimizer or miss the weights.

    FSDP checkpoints (full tensors by name) resume anywhere; DeepSpeed's shard the optimizer
    per rank and resume only under DeepSpeed on the same number of processes; a plain
    (one process / DDP) checkpoint has no name-keyed state for FSDP to load.
    """
    writer, ranks = writer_of(folder)
    if writer == "deepspeed" and (strategy != "deepspeed" or ranks != world):
        raise UsageError(
            f"resume_from_checkpoint: {folder} holds DeepSpeed ZeRO optimizer shards of {ranks} "
            f"processes; resume it with deepspeed on {ranks} processes (this run: {strategy}, "
            f"{world}), or convert it first with DeepSpeed's ds_to_universal"
        )
    if strategy == "fsdp" and writer == "plain":
        raise UsageError(
            f"resume_from_checkpoint: {folder} was written without FSDP (no trainable.safetensors);"
            " resume it with distributed: ddp or on one process"
        )
    if strategy == "deepspeed" and writer != "deepspeed":
        raise UsageError(
            f"resume_from_checkpoint: {folder} was written without DeepSpeed; resume it with the "
            "strategy that wrote it"
        )
