"""The estimator in front of `danlu train`: warn, shrink the micro-batch, explain an OOM."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from danlu.config import load_config
from danlu.train import memcheck
from danlu.train.engine import _run
from danlu.utils.errors import RuntimeFailure


def _cfg(*extra: str):
    return load_config(
        None,
        [
            "model=smollm2-135m-instruct",
            "per_device_train_batch_size=8",
            "gradient_accumulation_steps=2",
            "cutoff_len=1024",
            *extra,
        ],
    )


def _budget_between(cfg, small: int, big: int) -> float:
    """A device size where micro-batch `small` fits (with headroom) and `big` does not."""
    lo, hi = memcheck.estimate_peak(cfg, "cpu", small), memcheck.estimate_peak(cfg, "cpu", big)
    assert lo < hi
    return (lo + hi) / 2 / memcheck.HEADROOM


def test_auto_batch_size_keeps_the_global_batch(monkeypatch):
    cfg = _cfg("auto_batch_size=true")
    monkeypatch.setattr(memcheck, "device_memory", lambda d: _budget_between(cfg, 3, 4))
    lines: list[str] = []
    out = memcheck.preflight(cfg, "cpu", lines.append)
    assert (out.per_device_train_batch_size, out.gradient_accumulation_steps) == (3, 6)  # 3*6 >= 16
    assert lines[-1] == (
        "memory: auto_batch_size: per_device_train_batch_size 8 -> 3, "
        "gradient_accumulation_steps 2 -> 6"
    )


def test_without_auto_it_only_warns_with_a_suggestion(monkeypatch):
    cfg = _cfg()
    monkeypatch.setattr(memcheck, "device_memory", lambda d: _budget_between(cfg, 2, 3))
    lines: list[str] = []
    out = memcheck.preflight(cfg, "cpu", lines.append)
    assert out.per_device_train_batch_size == 8
    assert "WARNING" in lines[-1]
    assert (
        "per_device_train_batch_size=2 (with gradient_accumulation_steps=8) or auto_batch_size=true"
        in lines[-1]
    )


def test_fitting_run_is_unchanged(monkeypatch):
    cfg = _cfg()
    monkeypatch.setattr(memcheck, "device_memory", lambda d: 1e15)
    lines: list[str] = []
    assert memcheck.preflight(cfg, "cpu", lines.append) is cfg
    assert lines[0].startswith("memory: estimated peak ")


def test_unknown_architecture_does_not_stop_training(tmp_path):
    lines: list[str] = []
    cfg = load_config(None, [f"model={tmp_path}"])
    assert memcheck.preflight(cfg, "cpu", lines.append) is cfg
    assert lines[0].startswith(f"memory: no estimate for {tmp_path}")


def test_oom_during_training_is_one_line_with_the_fix(monkeypatch):
    cfg = _cfg()
    monkeypatch.setattr(memcheck, "device_memory", lambda d: _budget_between(cfg, 2, 3))

    def boom(**kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    trainer = SimpleNamespace(
        train=boom,
        args=SimpleNamespace(device=torch.device("cpu")),
        state=SimpleNamespace(global_step=7),
    )
    with pytest.raises(RuntimeFailure) as info:
        _run(trainer, cfg, None)
    msg = str(info.value)
    assert msg.startswith("out of memory at step 7 on cpu (estimated peak ")
    assert "\n" not in msg and "per_device_train_batch_size=2" in msg


def test_other_runtime_errors_pass_through():
    def bad(**kw):
        raise RuntimeError("shape mismatch")

    trainer = SimpleNamespace(
        train=bad,
        args=SimpleNamespace(device=torch.device("cpu")),
        state=SimpleNamespace(global_step=0),
    )
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _run(trainer, _cfg(), None)
