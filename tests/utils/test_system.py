import os

import pytest

from danlu.utils import system
from danlu.utils.docstrings import field_docs


def test_available_cpus_respects_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(system, "_cgroup_cpu_quota", lambda: None)
    assert system.available_cpus() == 4
    monkeypatch.setattr(system, "_cgroup_cpu_quota", lambda: 1.5)
    assert system.available_cpus() == 2  # a 1.5-CPU quota rounds to 2 threads
    monkeypatch.setattr(system, "_cgroup_cpu_quota", lambda: 0.2)
    assert system.available_cpus() == 1


def test_configure_threads():
    import torch

    before = torch.get_num_threads()
    try:
        assert system.configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert system.configure_threads(0) == system.available_cpus()
    finally:
        torch.set_num_threads(before)


def test_danlu_home_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DANLU_HOME", str(tmp_path))
    assert system.danlu_home() == tmp_path
    monkeypatch.delenv("DANLU_HOME")
    assert system.danlu_home().parts[-2:] == (".cache", "danlu")


class _Documented:
    a: int = 1
    """The a."""
    b: str = "x"
    c: float = 0.0
    """Multi
    line."""


def test_field_docs_reads_attribute_docstrings():
    assert field_docs(_Documented) == {"a": "The a.", "b": "", "c": "Multi\nline."}


@pytest.mark.parametrize("quota,expected", [("max 100000", None), ("200000 100000", 2.0)])
def test_cgroup_quota_parsing(tmp_path, monkeypatch, quota, expected):
    f = tmp_path / "cpu.max"
    f.write_text(quota)
    monkeypatch.setattr(system, "Path", lambda p: f)
    assert system._cgroup_cpu_quota() == expected
