"""Run-directory checkpoints (DESIGN §5): complete or absent, never half-written.

Trainer writes a checkpoint under `checkpoints/.staging/`, rank 0 writes its manifest
(`danlu_manifest.json`) last, and the folder is renamed to `checkpoints/step-N` only then, so a
crash or SIGKILL mid-save leaves at most a staged folder, which is ignored (and removed when
the run starts again).

A checkpoint is usable (`checkpoint_problem` is None) when the files a Trainer resume needs are
there (trainer state, weights, optimizer, scheduler: a resume without them would silently
start a fresh optimizer), every file its manifest lists is there with that size (and, for
files of at most 1 MiB, that SHA-256), and its JSON, safetensors and torch files open. The
manifest holds sizes of everything (a truncated or missing file costs one `stat` to find) and
checksums of the small files only: those are the state a resume reads whole (trainer state,
scheduler, RNG, configs), where a silent change would go unnoticed; hashing gigabytes of weights
and optimizer state at every save and resume would cost minutes, and their headers are parsed
instead. Checkpoints written before manifests existed are accepted when the files a resume
needs are present and readable.

`resume_from_checkpoint: auto` takes the newest usable `step-N`, skipping (with a warning)
any that is not; an explicit path must be usable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from danlu.train.fsdp import OPTIMIZER, TRAINABLE
from danlu.utils.errors import UsageError
from danlu.utils.fs import atomic_dir, error_line, publish

__all__ = ["atomic_dir", "publish"]  # re-exported for callers that think in checkpoints

_STEP = re.compile(r"^step-(\d+)$")
_log = logging.getLogger("danlu.train")

STATE_FILE = "trainer_state.json"
SCHEDULER = "scheduler.pt"
MANIFEST = "danlu_manifest.json"
MANIFEST_VERSION = 1
HASHED_UP_TO = 1 << 20  # bytes: files this small get a checksum in the manifest
# Trainer loads the first of these it finds (`Trainer._load_from_checkpoint`).
WEIGHTS = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")  # torch.save's zip format


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
    """(step, folder) of every published checkpoint, oldest first (see `checkpoint_problem`)."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    return sorted((step, p) for p in root.iterdir() if (step := step_of(p)) is not None)


def resolve_resume(value: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: None, `auto` (newest usable, if any) or a usable folder."""
    if value is None:
        return None
    if value == "auto":
        return newest_usable(output_dir)
    path = Path(value).expanduser()
    if problem := checkpoint_problem(path):
        raise UsageError(
            f"resume_from_checkpoint: {value} is not a complete checkpoint ({problem})"
        )
    return path


def newest_usable(output_dir: str | Path) -> Path | None:
    """The newest checkpoint that passes `checkpoint_problem`; each newer one is named in a
    warning, so a resume from an older step never goes unexplained."""
    for _, folder in reversed(complete_checkpoints(output_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        _log.warning(
            f"resume_from_checkpoint: auto skips {folder}, not a complete checkpoint ({problem})"
        )
    return None


# --- the manifest -------------------------------------------------------------------------------


def write_manifest(folder: Path) -> Path:
    """List every file of `folder` (relative path, size, SHA-256 when small) in its manifest.

    Written last, after every rank's files (so it covers DeepSpeed and FSDP shards alike):
    a listed file that is absent or of another size was lost or cut after the save.
    """
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = _entry(path)
    manifest = {"version": MANIFEST_VERSION, "files": files}
    target = folder / MANIFEST
    target.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return target


def _entry(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    entry: dict[str, Any] = {"size": size}
    if size <= HASHED_UP_TO:
        entry["sha256"] = _sha256(path)
    return entry


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the check resume uses ----------------------------------------------------------------------


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from, naming the file at fault; None when it can."""
    manifest, problem = _read_manifest(folder)
    if problem is None:
        problem = _missing_for_resume(folder)
    if problem is None and manifest is not None:
        problem = _differs_from_manifest(folder, manifest)
    if problem is None:
        listed = sorted(manifest) if manifest is not None else _all_files(folder)
        problem = next(filter(None, (_unreadable(folder, rel) for rel in listed)), None)
    return problem


def _read_manifest(folder: Path) -> tuple[dict[str, dict] | None, str | None]:
    """(files listed, None), (None, None) for a checkpoint older than manifests, or a problem."""
    path = folder / MANIFEST
    if not path.is_file():
        return None, None
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return None, f"{MANIFEST} is not valid"
    if not isinstance(files, dict) or not all(isinstance(e, dict) for e in files.values()):
        return None, f"{MANIFEST} is not valid"
    return files, None


def _missing_for_resume(folder: Path) -> str | None:
    """The first file a Trainer resume needs and `folder` lacks (Trainer itself would resume
    without an optimizer, scheduler or weights file and not say so)."""
    if not (folder / STATE_FILE).is_file():
        return f"no {STATE_FILE}"
    writer, ranks = writer_of(folder)
    if writer == "deepspeed":
        tag = (folder / "latest").read_text().strip()
        return None if ranks > 0 else f"no ZeRO optimizer shards in {tag}/"
    weights = (TRAINABLE,) if writer == "fsdp" else WEIGHTS
    if not any((folder / name).is_file() for name in weights):
        return f"no model weights ({' or '.join(weights)})"
    return next(
        (f"no {name}" for name in (OPTIMIZER, SCHEDULER) if not (folder / name).is_file()), None
    )


def _differs_from_manifest(folder: Path, files: dict[str, dict]) -> str | None:
    for rel, entry in sorted(files.items()):
        path = folder / rel
        if not path.is_file():
            return f"no {rel}"
        size, expected = path.stat().st_size, entry.get("size")
        if size != expected:
            cut = isinstance(expected, int) and size < expected
            what = "is truncated" if cut else "has the wrong size"
            return f"{rel} {what} ({size} bytes, {MANIFEST} lists {expected})"
        if "sha256" in entry and _sha256(path) != entry["sha256"]:
            return f"{rel} does not match its checksum in {MANIFEST}"
    return None


def _all_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _unreadable(folder: Path, rel: str) -> str | None:
    """Whether a file opens as what its name says (headers only: a cheap check of big files)."""
    kind, check = _READERS.get(Path(rel).suffix, (None, None))
    if check is None:
        return None
    try:
        check(folder / rel)
    except OSError as exc:
        return f"{rel} cannot be read ({exc.strerror or exc})"
    except Exception as exc:  # the reader's own error (JSON, safetensors, zip): a corrupt file
        return f"{rel} is not a readable {kind} file ({error_line(exc)})"
    return None


def _parse_json(path: Path) -> None:
    json.loads(path.read_text(encoding="utf-8"))


def _parse_safetensors(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # parses and checks the header
        f.keys()


def _open_zip(path: Path) -> None:
    zipfile.ZipFile(path).close()  # torch.save's format; reads the directory at the end


_READERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    ".json": ("JSON", _parse_json),
    ".safetensors": ("safetensors", _parse_safetensors),
    **{suffix: ("torch", _open_zip) for suffix in TORCH_SUFFIXES},
}


def save_failure(output_dir: str | Path, step: int, reason: str, part: str) -> str:
    """The one line for checkpoint `step` that could not be written (its staging folder gone)."""
    older = [(s, p) for s, p in complete_checkpoints(output_dir) if s < step]
    kept = (
        f"the previous checkpoint {older[-1][1].name} is intact ({older[-1][1]})"
        if older
        else "there is no earlier checkpoint"
    )
    return (
        f"saving checkpoint step-{step} failed: {reason} (writing {part}); the partial "
        f"checkpoint is discarded and {kept}; after fixing this, rerun with "
        "resume_from_checkpoint: auto"
    )


# --- rotation and who wrote it ------------------------------------------------------------------


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
