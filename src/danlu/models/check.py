"""Checks before a load: the files a model or adapter load will read are there, of the right
kind and readable, so a bad file is one line naming it, in milliseconds, instead of a
traceback from deep inside transformers or peft after the heavy work has started.

Only headers are read (the GGUF magic and tensor table, safetensors headers, small JSON files).
An adapter's tensor shapes are compared with the base model's from the two safetensors headers,
so an adapter trained on another base is refused before either is loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError

PICKLE = ("*.bin", "*.pt", "*.pth", "*.ckpt")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def read_json(path: Path, what: str) -> Any:
    """A small JSON file, or one line naming it and where it stops being JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what}: {path} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    except UnicodeDecodeError:
        raise UsageError(f"{what}: {path} is not UTF-8 text") from None


def check_gguf(path: Path, what: str) -> None:
    """A .gguf file that llama.cpp's own reader (the gguf package) can parse to the end."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise UsageError(f"{what}: {path} is not a GGUF file (it does not start with 'GGUF')")
    from gguf import GGUFReader

    try:
        GGUFReader(path)  # parses metadata and maps every tensor: a cut file fails here
    except Exception as exc:  # the reader raises ValueError/IndexError/... on any damage
        raise UsageError(
            f"{what}: {path} is truncated or corrupt ({type(exc).__name__}: {_short(exc)}); "
            "download or export it again"
        ) from None


def safetensors_shapes(path: Path, what: str) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header (which also proves the file is whole)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise UsageError(
            f"{what}: {path} is truncated or not a safetensors file ({_short(exc)}); "
            "save or download it again"
        ) from None


def check_model_folder(path: Path, what: str, allow_pickle: bool, trust_remote_code: bool) -> None:
    """config.json parses, weights are safe to load (or pickle is allowed) and whole, and code
    the folder ships is not needed unless trusted."""
    config = read_json(path / "config.json", what)
    if not isinstance(config, dict):
        raise UsageError(f"{what}: {path / 'config.json'} must hold a JSON object")
    _check_remote_code(config, path, what, trust_remote_code)
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not allow_pickle:
        pickles = [p.name for pattern in PICKLE for p in sorted(path.glob(pattern))]
        if pickles:
            raise UsageError(
                f"{what}: {path} has only pickle weights ({pickles[0]}), which can run code when "
                "loaded; convert them to safetensors or set allow_pickle: true"
            )
    for file in weights:
        safetensors_shapes(file, what)


def _check_remote_code(config: dict, path: Path, what: str, trust: bool) -> None:
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if trust or model_type in CONFIG_MAPPING or "auto_map" not in config:
        return
    raise UsageError(
        f"{what}: {path} needs its own modelling code (model_type '{model_type}' is not built "
        "into transformers; config.json has auto_map); read it, then set "
        "trust_remote_code: true (--trust-remote-code) to run it"
    )


def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT adapter folder (its adapter_config.json), rather than a whole model."""
    return (Path(path).expanduser() / "adapter_config.json").is_file()


def check_adapter(adapter: Path, base: Path, allow_pickle: bool) -> dict[str, Any]:
    """The adapter folder is a PEFT adapter for `base`; returns its adapter_config.json."""
    what = f"adapter '{adapter}'"
    if not adapter.is_dir():
        raise UsageError(f"{what}: no such folder")
    if not (adapter / "adapter_config.json").is_file():
        raise UsageError(f"{what}: no adapter_config.json (not a PEFT adapter)")
    config = read_json(adapter / "adapter_config.json", what)
    weights = adapter / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickles = [p.name for pattern in PICKLE for p in sorted(adapter.glob(pattern))]
        if not pickles:
            raise UsageError(f"{what}: no {ADAPTER_WEIGHTS} (the adapter's weights)")
        if not allow_pickle:
            raise UsageError(
                f"{what}: only pickle weights ({pickles[0]}), which can run code when loaded; "
                "convert them to safetensors or set allow_pickle: true"
            )
        return config
    _check_shapes(safetensors_shapes(weights, what), _base_shapes(base), what)
    return config


def _base_shapes(base: Path) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for file in sorted(base.glob("*.safetensors")):
        shapes.update(safetensors_shapes(file, f"model '{base}'"))
    return shapes


# lora_A: (rank, in_features); lora_B: (out_features, rank); the base weight: (out, in).
_LORA = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.\w+)?\.weight$")


def _check_shapes(adapter: dict[str, list[int]], base: dict[str, list[int]], what: str) -> None:
    for name, shape in adapter.items():
        m = _LORA.match(name)
        if not m or len(shape) != 2:
            continue
        target = _find_base(m.group("module"), base)
        if target is None or len(base[target]) != 2:
            continue
        out_f, in_f = base[target]
        side, want, got = (
            ("in", in_f, shape[1]) if m.group("ab") == "A" else ("out", out_f, shape[0])
        )
        if want != got:
            raise UsageError(
                f"{what} was trained on another base model: {name} has {side}_features {got}, "
                f"but {target} in the base model has {want}; use the base it was trained on "
                "(adapter_config.json base_model_name_or_path)"
            )


def _find_base(module: str, base: dict[str, list[int]]) -> str | None:
    """The base weight a LoRA module wraps; checkpoints may or may not keep the `model.` prefix."""
    for candidate in (f"{module}.weight", f"{module}.base_layer.weight"):
        if candidate in base:
            return candidate
    return None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] + ("..." if len(text) > 160 else "")
