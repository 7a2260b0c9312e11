"""Checkpoints appear complete or not at all; auto-resume finds the newest usable one (its
manifest and the files a resume needs check out); leftovers go; a full disk is one line."""

import errno
import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from danlu.train.checkpoint import (
    HASHED_UP_TO,
    MANIFEST,
    atomic_dir,
    check_resumable,
    checkpoint_problem,
    checkpoints_dir,
    complete_checkpoints,
    resolve_resume,
    rotate,
    save_failure,
    write_manifest,
    writer_of,
)
from danlu.train.rundir import check_run_dir, prepare_run_dir, save_final
from danlu.utils import fs
from danlu.utils.errors import RuntimeFailure, UsageError
from danlu.utils.fs import storage_failure


def make_ckpt(out, step, manifest=True):
    """A small checkpoint with the files a Trainer resume needs, real formats, and a manifest."""
    with atomic_dir(checkpoints_dir(out) / f"step-{step}") as tmp:
        (tmp / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
        save_file({"w": torch.arange(4.0) * step}, tmp / "adapter_model.safetensors")
        torch.save({"state": {}}, tmp / "optimizer.pt")
        torch.save({"last_epoch": step}, tmp / "scheduler.pt")
        if manifest:
            write_manifest(tmp)
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


# --- manifest and the resume check ------------------------------------------------------------


def test_manifest_lists_every_file_with_its_size_and_small_files_checksums(tmp_path):
    folder = make_ckpt(tmp_path, 2)
    (folder / "global_step2").mkdir()
    (folder / "global_step2" / "blob").write_bytes(b"x" * (HASHED_UP_TO + 1))  # too big to hash
    write_manifest(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    small = ["adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"]
    assert manifest == {
        "version": 1,
        "files": {
            "global_step2/blob": {"size": HASHED_UP_TO + 1},
            **{
                name: {
                    "size": (folder / name).stat().st_size,
                    "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
                }
                for name in small
            },
        },
    }
    assert checkpoint_problem(folder) is None


def _truncate(path, keep=None):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def _sizes(folder):
    return {k: v["size"] for k, v in json.loads((folder / MANIFEST).read_text())["files"].items()}


CORRUPTIONS = {
    "optimizer deleted": (lambda f: (f / "optimizer.pt").unlink(), "no optimizer.pt"),
    "weights truncated": (
        lambda f: _truncate(f / "adapter_model.safetensors"),
        "adapter_model.safetensors is truncated ({half} bytes, danlu_manifest.json lists {full})",
    ),
    "scheduler grown": (
        lambda f: (f / "scheduler.pt").write_bytes((f / "scheduler.pt").read_bytes() + b"!"),
        "scheduler.pt has the wrong size ({grown} bytes, danlu_manifest.json lists {sched})",
    ),
    "state changed, same size": (
        lambda f: (f / "trainer_state.json").write_text('{"global_step": 9}'),
        "trainer_state.json does not match its checksum in danlu_manifest.json",
    ),
    "manifest cut": (lambda f: _truncate(f / MANIFEST), "danlu_manifest.json is not valid"),
    "manifest lists a lost file": (
        lambda f: (f / "rng_state.pth").unlink(),
        "no rng_state.pth",
    ),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_checkpoint_problem_names_the_file_at_fault(tmp_path, name):
    folder = make_ckpt(tmp_path, 2)
    torch.save({"python": 1}, folder / "rng_state.pth")  # only the manifest says it must exist
    write_manifest(folder)
    sizes = _sizes(folder)
    corrupt, expected = CORRUPTIONS[name]
    corrupt(folder)
    full, sched = sizes["adapter_model.safetensors"], sizes["scheduler.pt"]
    assert checkpoint_problem(folder) == expected.format(
        half=full // 2, full=full, grown=sched + 1, sched=sched
    )


def test_checkpoint_without_manifest_is_checked_by_what_resume_needs(tmp_path):
    folder = make_ckpt(tmp_path, 2, manifest=False)  # as written before manifests existed
    assert checkpoint_problem(folder) is None
    weights = folder / "adapter_model.safetensors"
    _truncate(weights, keep=weights.stat().st_size - 4)  # the header intact, the data cut
    assert checkpoint_problem(folder) == (
        "adapter_model.safetensors is not a readable safetensors file (Error while deserializing "
        "header: incomplete metadata, file not fully covered)"
    )
    folder = make_ckpt(tmp_path, 3, manifest=False)
    _truncate(folder / "optimizer.pt")
    assert (
        checkpoint_problem(folder)
        == "optimizer.pt is not a readable torch file (File is not a zip file)"
    )
    folder = make_ckpt(tmp_path, 4, manifest=False)
    (folder / "trainer_state.json").write_text("{not json")
    assert checkpoint_problem(folder) == (
        "trainer_state.json is not a readable JSON file (Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1))"
    )
    folder = make_ckpt(tmp_path, 5, manifest=False)
    (folder / "adapter_model.safetensors").unlink()
    assert checkpoint_problem(folder) == (
        "no model weights (adapter_model.safetensors or adapter_model.bin or model.safetensors or "
        "model.safetensors.index.json or pytorch_model.bin or pytorch_model.bin.index.json)"
    )
    folder = make_ckpt(tmp_path, 6, manifest=False)
    (folder / "scheduler.pt").unlink()
    assert checkpoint_problem(folder) == "no scheduler.pt"


def test_auto_skips_a_broken_checkpoint_with_a_warning_and_explicit_is_refused(tmp_path, caplog):
    make_ckpt(tmp_path, 2)
    broken = make_ckpt(tmp_path, 4)
    (broken / "optimizer.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="danlu.train"):
        assert resolve_resume("auto", tmp_path) == checkpoints_dir(tmp_path) / "step-2"
    assert [r.getMessage() for r in caplog.records] == [
        f"resume_from_checkpoint: auto skips {broken}, not a complete checkpoint (no optimizer.pt)"
    ]
    with pytest.raises(UsageError) as info:
        resolve_resume(str(broken), tmp_path)
    assert str(info.value) == (
        f"resume_from_checkpoint: {broken} is not a complete checkpoint (no optimizer.pt)"
    )
    (checkpoints_dir(tmp_path) / "step-2" / "scheduler.pt").unlink()
    assert resolve_resume("auto", tmp_path) is None  # nothing usable: a fresh start, as before


def _ds_ckpt(folder, ranks):
    _deepspeed_ckpt(folder, ranks)
    (folder / "trainer_state.json").write_text("{}")
    for r in range(ranks):  # real (zip) files, as torch.save writes them
        torch.save({}, folder / "global_step4" / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt")
    torch.save({}, folder / "global_step4" / "mp_rank_00_model_states.pt")
    write_manifest(folder)
    return folder


def test_manifest_covers_deepspeed_and_fsdp_files(tmp_path):
    ds = _ds_ckpt(tmp_path / "ds", 2)
    assert checkpoint_problem(ds) is None
    (ds / "global_step4" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    assert checkpoint_problem(ds) == "no global_step4/zero_pp_rank_1_mp_rank_00_optim_states.pt"
    (ds / "global_step4" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    assert checkpoint_problem(ds) == "no ZeRO optimizer shards in global_step4/"
    fsdp = tmp_path / "fsdp"
    fsdp.mkdir()
    (fsdp / "trainer_state.json").write_text("{}")
    save_file({"w": torch.ones(8)}, fsdp / "trainable.safetensors")
    torch.save({}, fsdp / "optimizer.pt")
    torch.save({}, fsdp / "scheduler.pt")
    write_manifest(fsdp)
    assert checkpoint_problem(fsdp) is None
    _truncate(fsdp / "trainable.safetensors", keep=8)
    size = _sizes(fsdp)["trainable.safetensors"]
    assert checkpoint_problem(fsdp) == (
        f"trainable.safetensors is truncated (8 bytes, danlu_manifest.json lists {size})"
    )


# --- leftovers and storage failures ----------------------------------------------------------


def _leftovers(run):
    for path in ("checkpoints/.staging/checkpoint-6", "checkpoints/.step-6.tmp-a",
                 ".final.tmp-b", ".final.staging"):  # fmt: skip
        (run / path).mkdir(parents=True)
        (run / path / "adapter_model.safetensors").write_bytes(b"half")


def test_resume_removes_what_killed_writers_left(tmp_path):
    run = tmp_path / "run"
    make_ckpt(run, 2)
    _leftovers(run)
    checkpoint = check_run_dir(run, "auto", overwrite=False)
    assert checkpoint == checkpoints_dir(run) / "step-2"
    prepare_run_dir(run, checkpoint)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "metrics.jsonl"]
    assert sorted(p.name for p in checkpoints_dir(run).iterdir()) == ["step-2"]


def test_a_fresh_start_removes_leftovers_but_a_refused_one_touches_nothing(tmp_path):
    run = tmp_path / "run"
    _leftovers(run)
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(UsageError, match="already holds a run"):
        check_run_dir(run, None, overwrite=False)
    assert (run / ".final.tmp-b" / "adapter_model.safetensors").read_bytes() == b"half"
    assert check_run_dir(run, "auto", overwrite=False) is None  # killed before its first save
    assert (run / ".final.tmp-b").is_dir()  # the check reads only
    prepare_run_dir(run, None)
    assert sorted(p.name for p in run.iterdir()) == []


def test_storage_failure_reads_every_shape_a_full_disk_takes(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    assert storage_failure(OSError(errno.ENOSPC, "x"), tmp_path) == "No space left on device"
    assert storage_failure(OSError(errno.EFBIG, "x"), tmp_path) == "File too large"
    full = SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )
    assert storage_failure(full, tmp_path) == "No space left on device"
    try:
        try:
            raise OSError(errno.EDQUOT, "quota")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert storage_failure(outer, tmp_path) == "Disk quota exceeded"
    assert storage_failure(ValueError("a bug"), tmp_path) is None
    torch_error = RuntimeError(
        "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
    )
    assert storage_failure(torch_error, tmp_path) == (
        "the write failed ([enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598)"
    )
    monkeypatch.setattr(fs, "_available_bytes", lambda folder: 4096)  # what a full disk shows
    assert storage_failure(torch_error, tmp_path / "gone" / "deeper") == "No space left on device"


def test_save_failure_says_which_checkpoint_is_intact(tmp_path):
    assert save_failure(tmp_path, 2, "No space left on device", "the RNG state") == (
        "saving checkpoint step-2 failed: No space left on device (writing the RNG state); the "
        "partial checkpoint is discarded and there is no earlier checkpoint; after fixing this, "
        "rerun with resume_from_checkpoint: auto"
    )
    make_ckpt(tmp_path, 2)
    make_ckpt(tmp_path, 6)  # a later step of an older timeline is not "previous"
    assert save_failure(tmp_path, 4, "File too large", "the model weights and tokenizer") == (
        "saving checkpoint step-4 failed: File too large (writing the model weights and tokenizer); the "
        "partial checkpoint is discarded and the previous checkpoint step-2 is intact "
        f"({checkpoints_dir(tmp_path) / 'step-2'}); after fixing this, rerun with "
        "resume_from_checkpoint: auto"
    )


class _FillsTheDisk:
    """A model / tokenizer whose save writes part of a file, then finds the disk full."""

    def save_pretrained(self, folder, **_):
        Path(folder, "adapter_model.safetensors").write_bytes(b"part")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_final_on_a_full_disk_is_one_line_and_leaves_no_partial_folder(tmp_path):
    make_ckpt(tmp_path, 4)
    with pytest.raises(RuntimeFailure) as info:
        save_final(_FillsTheDisk(), None, tmp_path, is_adapter=True)
    assert str(info.value) == (
        f"saving {tmp_path / 'final'} failed: No space left on device; the partial folder was "
        "removed; after fixing this, rerun with resume_from_checkpoint: auto (it continues from "
        "checkpoint step-4, which is intact)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]
