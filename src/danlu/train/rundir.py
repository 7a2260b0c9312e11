"""The run directory (DESIGN §5): refuse to clobber, pick the resume point, publish `final/`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from danlu.train.checkpoint import resolve_resume, staging_dir, step_of
from danlu.train.metrics import MetricsFile
from danlu.utils.errors import UsageError
from danlu.utils.fs import atomic_dir

# What a run writes; `overwrite_output_dir` removes only these, never a user's other files.
RUN_FILES = ("config.yaml", "deepspeed.json", "data_report.json", "metrics.jsonl", "loss.png",
             "tb", "checkpoints", "final")  # fmt: skip


def prepare_run_dir(run_dir: Path, resume: str | None, overwrite: bool) -> Path | None:
    """Check `run_dir` can take this run; return the checkpoint to resume from, if any.

    A run never silently writes over another run's results: a directory that already holds a
    run needs `resume_from_checkpoint` (to continue it) or `overwrite_output_dir` (to replace it).
    """
    checkpoint = resolve_resume(resume, run_dir)
    # A save killed before its rename leaves Trainer's half-written folder in staging: drop it.
    shutil.rmtree(staging_dir(run_dir), ignore_errors=True)
    if checkpoint is not None:
        step = step_of(checkpoint)
        if step is not None:
            MetricsFile(run_dir / "metrics.jsonl").truncate_after(step)
        return checkpoint
    holds_run = [name for name in RUN_FILES if (run_dir / name).exists()]
    # `auto` with no complete checkpoint restarts a run killed before its first save, but never
    # replaces a finished one.
    restartable = resume == "auto" and "final" not in holds_run
    if holds_run and not (overwrite or restartable):
        raise UsageError(
            f"output_dir {run_dir} already holds a run ({', '.join(holds_run)}); set "
            f"resume_from_checkpoint: auto to continue it or overwrite_output_dir: true"
        )
    if holds_run:
        for name in holds_run:
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def save_final(model: Any, tokenizer: Any, run_dir: Path, is_adapter: bool) -> Path:
    """`final/`: a PEFT adapter or a full HF model, plus the tokenizer, published atomically.

    The tokenizer goes with adapters too: it carries the chat template the model was trained
    with and any added tokens, so `danlu chat --adapter final/` needs nothing else.
    """
    final = run_dir / "final"
    with atomic_dir(final) as tmp:
        if is_adapter:
            model.save_pretrained(tmp)
        else:
            _unwrap(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return final


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "module") else model
