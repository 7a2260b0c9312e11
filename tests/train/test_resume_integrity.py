"""Resume integrity on real `danlu train` runs of a tiny model: broken checkpoints are skipped
(auto) or refused (explicit path), a full disk mid-save keeps the previous checkpoint and ends in
one line, and a run killed while publishing final/ resumes straight to the same final/."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from danlu.config import load_config
from danlu.train.checkpoint import checkpoint_problem, checkpoints_dir
from danlu.train.engine import train
from danlu.train.rundir import check_run_dir, prepare_run_dir
from danlu.utils.errors import RuntimeFailure, UsageError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "sft.jsonl"
    rows = [
        {"instruction": f"Question {i} about tea?", "input": "", "output": "tea " * (1 + i % 7)}
        for i in range(24)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(model_dir: Path, data: Path, out: Path, *extra: str):
    """4 steps of 4 samples (24 rows: max_steps ends mid-epoch), saves at 2 and 4, constant lr."""
    return load_config(None, [
        f"model={model_dir}", f"data=[{data}]", f"output_dir={out}", "method=lora", "lora_rank=4",
        "max_steps=4", "save_steps=2", "logging_steps=1", "per_device_train_batch_size=4",
        "learning_rate=1e-2", "lr_scheduler_type=constant", "threads=1", "report_to=none",
        "cutoff_len=64", "data_cache=false", *extra,
    ])  # fmt: skip


@pytest.fixture(scope="module")
def straight(tiny_model_dir, data_file, tmp_path_factory) -> Path:
    """An uninterrupted run; tests copy it and break the copy."""
    out = tmp_path_factory.mktemp("straight") / "run"
    train(_cfg(tiny_model_dir, data_file, out), log=lambda _: None)
    return out


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _cut_tail(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-16])


def _not_json(path: Path) -> None:
    path.write_text("{" + " " * (path.stat().st_size - 1))  # same size: only its checksum tells


def _legacy(corrupt):
    """As `corrupt`, in a checkpoint from before manifests."""

    def apply(folder: Path) -> None:
        (folder / "danlu_manifest.json").unlink()
        corrupt(folder)

    return apply


BROKEN = {
    "optimizer.pt deleted": (lambda f: (f / "optimizer.pt").unlink(), "no optimizer.pt"),
    "safetensors truncated": (
        lambda f: _cut_tail(f / "adapter_model.safetensors"),
        "adapter_model.safetensors is truncated ({cut} bytes, danlu_manifest.json lists {size})",
    ),
    "trainer_state.json not JSON": (
        lambda f: _not_json(f / "trainer_state.json"),
        "trainer_state.json does not match its checksum in danlu_manifest.json",
    ),
    "legacy: safetensors truncated": (
        _legacy(lambda f: _cut_tail(f / "adapter_model.safetensors")),
        "adapter_model.safetensors is not a readable safetensors file (Error while deserializing "
        "header: incomplete metadata, file not fully covered)",
    ),
    "legacy: trainer_state.json not JSON": (
        _legacy(lambda f: _not_json(f / "trainer_state.json")),
        "trainer_state.json is not a readable JSON file (Expecting property name enclosed in "
        "double quotes: line 1 column {end} (char {last}))",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_checkpoint_is_skipped_by_auto_and_refused_by_path(straight, tmp_path, caplog, case):
    run = _copy(straight, tmp_path / "run")
    step4 = checkpoints_dir(run) / "step-4"
    size = (step4 / "adapter_model.safetensors").stat().st_size
    state = (step4 / "trainer_state.json").stat().st_size
    corrupt, expected = BROKEN[case]
    corrupt(step4)
    problem = expected.format(cut=size - 16, size=size, end=state + 1, last=state)
    with pytest.raises(UsageError) as info:
        check_run_dir(run, str(step4), overwrite=False)
    assert str(info.value) == (
        f"resume_from_checkpoint: {step4} is not a complete checkpoint ({problem})"
    )
    with caplog.at_level(logging.WARNING, logger="danlu.train"):
        checkpoint = check_run_dir(run, "auto", overwrite=False)
    assert checkpoint == checkpoints_dir(run) / "step-2"
    prepare_run_dir(run, checkpoint)
    assert [r.getMessage() for r in caplog.records] == [
        f"resume_from_checkpoint: auto skips {step4}, not a complete checkpoint ({problem})"
    ]
    assert _steps(run) == [1, 2]  # what the skipped checkpoint's steps logged is gone


def test_auto_resumes_a_run_whose_last_checkpoint_lost_its_optimizer(
    straight, tiny_model_dir, data_file, tmp_path, caplog
):
    run = _copy(straight, tmp_path / "run")
    shutil.rmtree(run / "final")  # as a run killed after its last save
    step4 = checkpoints_dir(run) / "step-4"
    (step4 / "optimizer.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="danlu.train"):
        result = train(
            _cfg(tiny_model_dir, data_file, run, "resume_from_checkpoint=auto"), log=lambda _: None
        )
    assert (
        f"resume_from_checkpoint: auto skips {step4}, not a complete checkpoint (no optimizer.pt)"
        in [r.getMessage() for r in caplog.records]
    )
    assert result.resumed_from == checkpoints_dir(run) / "step-2"
    assert result.global_step == 4 and _steps(run) == [1, 2, 3, 4]
    assert checkpoint_problem(step4) is None  # saved again, whole
    a, b = _adapter(straight / "final"), _adapter(result.final_dir)
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:  # the optimizer state came back with step-2: the same run
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def _disk_full_at(monkeypatch, step: int, file: str, code: int, snapshot: dict) -> None:
    """torch.save of `file` in checkpoint `step` writes part of it, then the disk is full;
    `snapshot` gets the published checkpoints' files as they were at that moment."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        path = Path(str(f))
        if path.name == file and path.parent.name == f"checkpoint-{step}":
            root = path.parents[2]
            snapshot.update({p.name: _files(p) for p in root.glob("step-*")})
            path.write_bytes(b"PK\x03\x04 partial")
            raise OSError(code, os.strerror(code))
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


FULL_DISK = {
    "optimizer at step 4": (
        4,
        "optimizer.pt",
        errno.ENOSPC,
        "saving checkpoint step-4 failed: No space left on device (writing optimizer.pt); the "
        "partial checkpoint is discarded and the previous checkpoint step-2 "
        "is intact ({run}/checkpoints/step-2); after fixing this, rerun with "
        "resume_from_checkpoint: auto",
    ),
    "rng state at step 2": (
        2,
        "rng_state.pth",
        errno.EFBIG,
        "saving checkpoint step-2 failed: File too large (writing rng_state.pth); the partial "
        "checkpoint is discarded and there is no earlier checkpoint; after fixing this, rerun with "
        "resume_from_checkpoint: auto",
    ),
}


@pytest.mark.parametrize("case", sorted(FULL_DISK))
def test_full_disk_mid_save_keeps_the_previous_checkpoint(
    straight, tiny_model_dir, data_file, tmp_path, monkeypatch, case
):
    step, file, code, message = FULL_DISK[case]
    run = tmp_path / "run"
    before: dict[str, dict[str, bytes]] = {}
    _disk_full_at(monkeypatch, step, file, code, before)
    with pytest.raises(RuntimeFailure) as info:
        train(_cfg(tiny_model_dir, data_file, run), log=lambda _: None)
    assert str(info.value) == message.format(run=run)
    kept = sorted(before)
    assert kept == (["step-2"] if step == 4 else [])
    assert sorted(p.name for p in checkpoints_dir(run).iterdir()) == [".staging", *kept]
    assert list((checkpoints_dir(run) / ".staging").iterdir()) == []  # the partial one is gone
    assert {name: _files(checkpoints_dir(run) / name) for name in kept} == before  # bit-equal
    assert not (run / "final").exists()
    monkeypatch.undo()  # space freed: the advice in the message works
    result = train(
        _cfg(tiny_model_dir, data_file, run, "resume_from_checkpoint=auto"), log=lambda _: None
    )
    assert result.resumed_from == (checkpoints_dir(run) / "step-2" if kept else None)
    assert result.global_step == 4 and _steps(run) == [1, 2, 3, 4]
    a, b = _adapter(straight / "final"), _adapter(result.final_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


def _killed_while_publishing_final(run: Path) -> None:
    """What SIGKILL inside save_final leaves: every checkpoint, final/ still a temp folder (and
    the other writers' leftovers a kill can leave)."""
    (run / "final").rename(run / ".final.tmp-x1y2")
    (run / ".final.tmp-x1y2" / "adapter_model.safetensors").write_bytes(b"half")
    for leftover in (
        ".final.staging",
        "checkpoints/.staging/checkpoint-6",
        "checkpoints/.step-6.tmp-a",
    ):
        (run / leftover).mkdir(parents=True, exist_ok=True)
        (run / leftover / "optimizer.pt").write_bytes(b"half")


def test_kill_while_publishing_final_resumes_to_the_same_final_without_a_step_more(
    straight, tiny_model_dir, data_file, tmp_path
):
    run = _copy(straight, tmp_path / "run")
    _killed_while_publishing_final(run)
    result = train(
        _cfg(tiny_model_dir, data_file, run, "resume_from_checkpoint=auto"), log=lambda _: None
    )
    assert result.resumed_from == checkpoints_dir(run) / "step-4"
    assert result.global_step == 4  # Trainer's own count: no step beyond max_steps
    assert _steps(run) == [1, 2, 3, 4]
    final = "adapter_model.safetensors"
    assert (result.final_dir / final).read_bytes() == (straight / "final" / final).read_bytes()
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints", "config.yaml", "data_report.json", "final", "loss.png", "metrics.jsonl",
    ]  # fmt: skip
    assert sorted(p.name for p in checkpoints_dir(run).iterdir()) == ["step-2", "step-4"]
    assert _files(checkpoints_dir(run)) == _files(checkpoints_dir(straight))  # untouched
