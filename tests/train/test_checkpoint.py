"""Checkpoints appear complete or not at all; auto-resume finds the newest complete one."""

import pytest

from danlu.train.checkpoint import (
    atomic_dir,
    check_resumable,
    checkpoints_dir,
    complete_checkpoints,
    resolve_resume,
    rotate,
    writer_of,
)
from danlu.utils.errors import UsageError


def make_ckpt(out, step):
    with atomic_dir(checkpoints_dir(out) / f"step-{step}") as tmp:
        (tmp / "trainer_state.json").write_text("{}")
        (tmp / "adapter_model.safetensors").write_bytes(b"w" * 10)
    return checkpoints_dir(out) / f"step-{step}"


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


def _deepspeed_ckpt(folder, ranks: int):
    (folder / "global_step4").mkdir(parents=True)
    (folder / "latest").write_text("global_step4")
    for r in range(ranks):
        (folder / "global_step4" / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt").write_bytes(b"")
    return folder


def test_writer_of_tells_deepspeed_fsdp_and_plain_apart(tmp_path):
    assert writer_of(_deepspeed_ckpt(tmp_path / "ds", 2)) == ("deepspeed", 2)
    (tmp_path / "fsdp").mkdir()
    (tmp_path / "fsdp" / "trainable.safetensors").write_bytes(b"")
    assert writer_of(tmp_path / "fsdp") == ("fsdp", 0)
    assert writer_of(make_ckpt(tmp_path, 2)) == ("plain", 0)


def test_resume_that_would_drop_state_is_refused(tmp_path):
    ds = _deepspeed_ckpt(tmp_path / "ds", 2)
    check_resumable(ds, "deepspeed", 2)
    with pytest.raises(UsageError, match=r"optimizer shards of 2 processes; resume it with "
                       r"deepspeed on 2 processes \(this run: deepspeed, 4\)"):  # fmt: skip
        check_resumable(ds, "deepspeed", 4)
    with pytest.raises(UsageError, match=r"\(this run: none, 1\)"):
        check_resumable(ds, "none", 1)
    plain = make_ckpt(tmp_path, 2)
    check_resumable(plain, "ddp", 2)
    with pytest.raises(UsageError, match="written without FSDP"):
        check_resumable(plain, "fsdp", 2)
    with pytest.raises(UsageError, match="written without DeepSpeed"):
        check_resumable(plain, "deepspeed", 2)
    (tmp_path / "fsdp").mkdir()
    (tmp_path / "fsdp" / "trainable.safetensors").write_bytes(b"")
    for strategy, world in (("fsdp", 3), ("ddp", 2), ("none", 1)):  # by name: any count
        check_resumable(tmp_path / "fsdp", strategy, world)
