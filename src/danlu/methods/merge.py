"""Merge a LoRA-family adapter into its base and save a plain HF model (for `danlu merge`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from danlu.models.check import read_json
from danlu.utils.errors import UsageError
from danlu.utils.fs import atomic_dir
from danlu.utils.paths import check_writable_dir

_MERGEABLE = {"LORA", "ADALORA", "IA3"}


def merge_lora(
    base_path: str | Path,
    adapter_path: str | Path,
    out_dir: str | Path,
    *,
    dequantize: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Write base + adapter, merged, to `out_dir` (safetensors + tokenizer); return `out_dir`.

    The folder appears complete or not at all: everything is written to a temporary sibling
    that is renamed into place. A quantised base is refused unless `dequantize` is set,
    because merging into rounded weights would silently change the model.
    """
    from danlu.config import ModelArgs
    from danlu.models import load_model

    out = Path(out_dir).expanduser()
    _check_out_dir(out)
    adapter = Path(adapter_path).expanduser()
    _check_adapter(adapter)
    _check_base_not_quantized(Path(base_path).expanduser(), dequantize)
    args = ModelArgs(
        model=str(base_path),
        adapter=str(adapter),
        device="cpu",
        allow_pickle=allow_pickle,
        model_dtype="float32" if dequantize else "auto",
    )
    loaded = load_model(args)
    merged = loaded.model.merge_and_unload()
    with atomic_dir(out) as tmp:
        _save(merged, _tokenizer_source(adapter, loaded), tmp)
    return out


def _save(model: Any, tokenizer: Any, dest: Path) -> None:
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def _tokenizer_source(adapter: Path, loaded: Any) -> Any:
    # An adapter trained with added tokens ships its own tokenizer; prefer it to the base's.
    if (adapter / "tokenizer_config.json").is_file():
        from danlu.models import load_tokenizer

        return load_tokenizer(adapter)
    return loaded.tokenizer


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"merge output '{out}' already exists and is not empty")
    check_writable_dir(out, "--out")


def _check_adapter(adapter: Path) -> None:
    cfg_file = adapter / "adapter_config.json"
    if not cfg_file.is_file():
        raise UsageError(f"adapter '{adapter}': no adapter_config.json (not a PEFT adapter)")
    kind = read_json(cfg_file, f"adapter '{adapter}'").get("peft_type", "?")
    if kind not in _MERGEABLE:
        raise UsageError(
            f"adapter '{adapter}' is {kind}; only LoRA/AdaLoRA/IA3 adapters can be merged "
            f"(prompt-learning adapters add tokens, they have no weights to merge into)"
        )


def _check_base_not_quantized(base: Path, dequantize: bool) -> None:
    cfg_file = base / "config.json"
    if not cfg_file.is_file() or dequantize:
        return  # embedded names / hub ids resolve later; they are never pre-quantised
    if "quantization_config" in read_json(cfg_file, f"base '{base}'"):
        raise UsageError(
            f"base '{base}' is quantised; merging into rounded weights changes the model. "
            f"Merge into the original full-precision base, or pass dequantize=True"
        )
