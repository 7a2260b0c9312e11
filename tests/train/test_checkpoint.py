"""Checkpoints appear complete or not at all; auto-resume finds the newest complete one."""

import pytest

from danlu.train.checkpoint import (
    atomic_dir,
    checkpoints_dir,
    complete_checkpoints,
    resolve_resume,
    rotate,
)
from danlu.utils.errors import UsageError


def make_ckpt(out, step):
    with atomic_dir(checkpoints_dir(out) / f"step-{step}") as tmp:
        (tmp / "trainer_state.json").write_text("{}")
        (tmp / "adapter_model.safetensors").write_bytes(b"w" * 10)


def test_crash_mid_save_leaves_no_checkpoint(tmp_path):
    dest = checkpoints_dir(tmp_path) / "step-5"
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "trainer_state.json").write_text("{}")
        raise RuntimeError("disk full")
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []
    assert resolve_resume("auto", tmp_path) is None


def test_auto_resume_picks_newest_complete_and_ignores_temp(tmp_path):
    for step in (10, 2, 30):
        make_ckpt(tmp_path, step)
    dead = checkpoints_dir(tmp_path) / ".step-40.tmp-abc"  # what a SIGKILL mid-save leaves
    dead.mkdir()
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [2, 10, 30]
    assert resolve_resume("auto", tmp_path).name == "step-30"
    assert resolve_resume(None, tmp_path) is None


def test_explicit_resume_must_be_complete(tmp_path):
    with pytest.raises(UsageError) as info:
        resolve_resume(str(tmp_path), tmp_path)
    assert str(info.value) == (
        f"resume_from_checkpoint: {tmp_path} is not a complete checkpoint (no trainer_state.json)"
    )


def test_rotate_keeps_newest_and_cleans_temp(tmp_path):
    for step in (1, 2, 3, 4):
        make_ckpt(tmp_path, step)
    (checkpoints_dir(tmp_path) / ".step-5.tmp-x").mkdir()
    removed = rotate(tmp_path, keep=2)
    assert [p.name for p in removed] == ["step-1", "step-2"]
    assert sorted(p.name for p in checkpoints_dir(tmp_path).iterdir()) == ["step-3", "step-4"]
    assert rotate(tmp_path, keep=None) == []


def test_atomic_dir_replaces_existing(tmp_path):
    make_ckpt(tmp_path, 7)
    with atomic_dir(checkpoints_dir(tmp_path) / "step-7") as tmp:
        (tmp / "trainer_state.json").write_text('{"v": 2}')
    assert (checkpoints_dir(tmp_path) / "step-7" / "trainer_state.json").read_text() == '{"v": 2}'
    assert not (checkpoints_dir(tmp_path) / "step-7" / "adapter_model.safetensors").exists()
