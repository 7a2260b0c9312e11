"""Resolving `model:` specs: folders, .gguf files, hub ids offline, embedded names; safety."""

from __future__ import annotations

import json

import pytest

from danlu.config import ModelArgs
from danlu.models import load_model, resolve_model
from danlu.models.convert import MARKER, convert_gguf
from danlu.utils.errors import UsageError


def test_folder_is_used_as_is(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir


def test_folder_without_config(tmp_path):
    with pytest.raises(UsageError) as info:
        resolve_model(str(tmp_path))
    assert (
        str(info.value) == f"model '{tmp_path}': folder has no config.json, not a HF model folder"
    )


def test_non_gguf_file(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(UsageError, match=r"a file must be \.gguf"):
        resolve_model(str(f))


def test_hub_id_offline_says_what_to_pass(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError) as info:
        resolve_model("SomeOrg/some-model-that-is-not-cached")
    msg = str(info.value)
    assert msg.startswith("model 'SomeOrg/some-model-that-is-not-cached' is not a local folder")
    assert "(offline)" in msg and "model=/path/to/it" in msg and "smollm2-135m-instruct" in msg


def test_unknown_name():
    with pytest.raises(UsageError, match=r"no such file or folder, not an embedded name"):
        resolve_model("./not-here")


def test_pickle_only_folder_refused_unless_allowed(tmp_path, tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    folder.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    torch.save(load_file(tiny_model_dir / "model.safetensors"), folder / "pytorch_model.bin")
    with pytest.raises(UsageError) as info:
        load_model(ModelArgs(model=str(folder)))
    assert "only pickle weights (pytorch_model.bin)" in str(info.value)
    assert "allow_pickle: true" in str(info.value)
    loaded = load_model(ModelArgs(model=str(folder), allow_pickle=True))
    assert loaded.model.config.num_hidden_layers == 2


def test_load_tiny_model_cpu_float32(tiny_model_dir):
    loaded = load_model(ModelArgs(model=str(tiny_model_dir)))
    assert str(loaded.model.device) == "cpu"
    assert next(loaded.model.parameters()).dtype.is_floating_point
    assert loaded.tokenizer.pad_token is not None
    assert loaded.model.training is False


def test_model_dtype_honoured(tiny_model_dir):
    import torch

    loaded = load_model(ModelArgs(model=str(tiny_model_dir), model_dtype="bfloat16"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_adapter_folder_must_be_peft(tiny_model_dir, tmp_path):
    with pytest.raises(UsageError, match=r"no adapter_config\.json"):
        load_model(ModelArgs(model=str(tiny_model_dir), adapter=str(tmp_path)))


# --- atomic conversion -------------------------------------------------------------------


def _fake_writer(calls, fail: bool):
    def write(gguf, dest):
        calls.append(dest)
        (dest / "config.json").write_text("{}")
        if fail:
            raise KeyboardInterrupt  # killed half-way (BaseException, like a real interrupt)
        (dest / "model.safetensors").write_bytes(b"weights")

    return write


def test_interrupted_conversion_leaves_nothing_loadable(tmp_path, monkeypatch):
    import danlu.models.convert as conv

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF....")
    out = tmp_path / "cache" / "m"
    calls: list = []
    monkeypatch.setattr(conv, "_write_hf_folder", _fake_writer(calls, fail=True))
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(gguf, out)
    assert not out.exists()
    assert list(out.parent.glob(".m.tmp-*")) == []  # temp folder removed too
    monkeypatch.setattr(conv, "_write_hf_folder", _fake_writer(calls, fail=False))
    assert convert_gguf(gguf, out) == out
    assert (out / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((out / MARKER).read_text())["size"] == gguf.stat().st_size


def test_sigkill_leftovers_are_ignored_and_cleaned(tmp_path, monkeypatch):
    """A SIGKILL cannot run cleanup: it leaves a temp folder, never `out` itself."""
    import danlu.models.convert as conv

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF....")
    out = tmp_path / "cache" / "m"
    leftover = out.parent / ".m.tmp-dead"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")
    calls: list = []
    monkeypatch.setattr(conv, "_write_hf_folder", _fake_writer(calls, fail=False))
    convert_gguf(gguf, out)
    assert not leftover.exists() and len(calls) == 1


def test_folder_without_marker_is_reconverted(tmp_path, monkeypatch):
    import danlu.models.convert as conv

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF....")
    out = tmp_path / "cache" / "m"
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")  # looks like a model, but no completion marker
    calls: list = []
    monkeypatch.setattr(conv, "_write_hf_folder", _fake_writer(calls, fail=False))
    convert_gguf(gguf, out)
    convert_gguf(gguf, out)  # second call: cached, no new conversion
    assert len(calls) == 1 and (out / "model.safetensors").exists()
