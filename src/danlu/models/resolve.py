"""Turn a `model:` value into a local HF folder: embedded name, folder, .gguf file, or hub id."""

from __future__ import annotations

import os
import re
from pathlib import Path

from danlu.models.convert import convert_gguf, gguf_cache_dir
from danlu.models.embedded import EMBEDDED, embedded_gguf
from danlu.utils.errors import UsageError
from danlu.utils.system import danlu_home

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def models_cache() -> Path:
    return danlu_home() / "models"


def resolve_model(spec: str, allow_pickle: bool = False) -> Path:
    """Local HF folder for `spec`; converts GGUF files once into DANLU_HOME/models."""
    if spec in EMBEDDED:
        return convert_gguf(embedded_gguf(spec), models_cache() / spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model '{spec}': folder has no config.json, not a HF model folder")
        return path
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UsageError(f"model '{spec}': a file must be .gguf; pass an HF folder otherwise")
        return convert_gguf(path, gguf_cache_dir(path, models_cache()))
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return _from_hub(spec, allow_pickle)
    names = ", ".join(EMBEDDED)
    raise UsageError(
        f"model '{spec}': no such file or folder, not an embedded name ({names}), not a hub id"
    )


def _from_hub(repo_id: str, allow_pickle: bool) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]
    if allow_pickle:
        patterns.append("*.bin")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    if not offline:
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns))
        except Exception as e:
            if not _is_network_error(e):
                raise UsageError(f"model '{repo_id}': hub download failed: {e}") from None
    raise UsageError(
        f"model '{repo_id}' is not a local folder and the Hugging Face hub cannot be reached "
        f"(offline): download it where there is network and pass its folder (model=/path/to/it), "
        f"or use the embedded model=smollm2-135m-instruct"
    )


def _is_network_error(e: BaseException) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    words = (
        "connect",
        "resolve",
        "name or service",
        "timed out",
        "timeout",
        "network",
        "internet",
        "offline",
        "outgoing traffic",
    )
    return any(w in text for w in words)
