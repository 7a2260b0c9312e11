"""The run directory (DESIGN §5): refuse to clobber, pick the resume point, publish `final/`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from danlu.train.checkpoint import (
    checkpoints_dir,
    complete_checkpoints,
    resolve_resume,
    staging_dir,
    step_of,
)
from danlu.train.metrics import MetricsFile
from danlu.utils.errors import RuntimeFailure, UsageError
from danlu.utils.fs import atomic_dir, remove_leftovers, storage_failure

# What a run writes; `overwrite_output_dir` removes only these, never a user's other files.
RUN_FILES = ("config.yaml", "deepspeed.json", "data_report.json", "metrics.jsonl", "loss.png",
             "tb", "checkpoints", "final")  # fmt: skip
FINAL_STAGING = ".final.staging"  # where a sharded run's ranks gather `final/` (engine)


def check_run_dir(run_dir: Path, resume: str | None, overwrite: bool) -> Path | None:
    """Whether `run_dir` can take this run, reading only: the checkpoint to resume from, if any.

    A run never silently writes over another run's results: a directory that already holds a
    run needs `resume_from_checkpoint` (to continue it) or `overwrite_output_dir` (to replace it).
    """
    checkpoint = resolve_resume(resume, run_dir)
    if checkpoint is not None:
        return checkpoint
    holds_run = _run_files(run_dir)
    # `auto` with no complete checkpoint restarts a run killed before its first save, but never
    # replaces a finished one.
    restartable = resume == "auto" and "final" not in holds_run
    if holds_run and not (overwrite or restartable):
        raise UsageError(
            f"output_dir {run_dir} already holds a run ({', '.join(holds_run)}); set "
            f"resume_from_checkpoint: auto to continue it or overwrite_output_dir: true"
        )
    return None


def prepare_run_dir(run_dir: Path, checkpoint: Path | None) -> None:
    """Make `run_dir` ready for the run `check_run_dir` accepted: the half-written folders of a
    killed run removed, and either the metrics cut back to the resumed step or the old run's
    files removed (overwrite, or a restart). Rank 0 only, once every check has passed and
    before training: nothing else writes into `run_dir` then."""
    remove_dead_writes(run_dir)
    if checkpoint is not None:
        step = step_of(checkpoint)
        if step is not None:
            MetricsFile(run_dir / "metrics.jsonl").truncate_after(step)
        return
    for name in _run_files(run_dir):
        target = run_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def _run_files(run_dir: Path) -> list[str]:
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def remove_dead_writes(run_dir: Path) -> None:
    """Remove what killed writers leave: Trainer's staging folder, `.step-N.tmp-*` checkpoints,
    `.final.tmp-*` and `.final.staging`. Only while no writer runs (rank 0, before training)."""
    shutil.rmtree(staging_dir(run_dir), ignore_errors=True)
    remove_leftovers(run_dir / "final")
    shutil.rmtree(run_dir / FINAL_STAGING, ignore_errors=True)
    root = checkpoints_dir(run_dir)
    for stale in root.glob(".step-*.tmp-*") if root.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)


def save_final(model: Any, tokenizer: Any, run_dir: Path, is_adapter: bool) -> Path:
    """`final/`: a PEFT adapter or a full HF model, plus the tokenizer, published atomically.

    The tokenizer goes with adapters too: it carries the chat template the model was trained
    with and any added tokens, so `danlu chat --adapter final/` needs nothing else. A full disk
    (or any storage failure) ends in one line saying which checkpoint `final/` can be
    republished from.
    """
    final = run_dir / "final"
    try:
        with atomic_dir(final) as tmp:
            if is_adapter:
                model.save_pretrained(tmp)
            else:
                _unwrap(model).save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    except Exception as exc:
        # safetensors and JSON writes name their errno: no free-space probe needed, so it
        # does not matter that atomic_dir already removed the partial folder
        reason = storage_failure(exc, run_dir)
        if reason is None:
            raise
        raise RuntimeFailure(final_failure(run_dir, reason)) from exc
    return final


def final_failure(run_dir: Path, reason: str) -> str:
    """The one line for a `final/` that could not be written, and how to get it."""
    found = complete_checkpoints(run_dir)
    again = (
        f"it continues from checkpoint {found[-1][1].name}, which is intact"
        if found
        else "there is no checkpoint, so it trains again"
    )
    return (
        f"saving {run_dir / 'final'} failed: {reason}; the partial folder was removed; after "
        f"fixing this, rerun with resume_from_checkpoint: auto ({again})"
    )


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "module") else model
