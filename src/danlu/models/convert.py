"""GGUF -> HF folder conversion, done once per file and atomically.

transformers dequantises a GGUF on load (~21 s for SmolLM2-135M here) but refuses to
`save_pretrained` it ("quantized with gguf and is not serializable") while the GGUF quantizer
is attached, although the weights it holds are plain floats by then. We detach the quantizer,
save float32 safetensors (exactly the dequantised values, so logits are identical), and later
loads take ~0.1 s.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from danlu.models.check import check_gguf
from danlu.utils.fs import atomic_dir, remove_leftovers

MARKER = "danlu-converted.json"


def gguf_cache_dir(gguf: Path, root: Path) -> Path:
    """Cache folder for a user-supplied GGUF, keyed by its absolute path, size and mtime."""
    st = gguf.stat()
    key = f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return root / f"gguf-{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Return `out`, converting `gguf` into it first unless a complete conversion exists.

    The folder is written under a temporary name beside `out` and renamed into place only when
    complete, under a file lock, so a killed conversion never leaves a half folder that loads.
    """
    from filelock import FileLock

    stamp = {"source": str(gguf.resolve()), "size": gguf.stat().st_size}
    if _complete(out, stamp):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if _complete(out, stamp):  # another process finished while we waited
            return out
        remove_leftovers(out)  # safe: we hold the lock, so no conversion is running
        with atomic_dir(out) as tmp:  # replaces a folder converted from another source file
            _write_hf_folder(gguf, tmp)
            (tmp / MARKER).write_text(json.dumps(stamp))
    return out


def _complete(out: Path, stamp: dict) -> bool:
    try:
        return json.loads((out / MARKER).read_text()) == stamp
    except (OSError, ValueError):
        return False


def _write_hf_folder(gguf: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from danlu.models.device import pick_device

    check_gguf(gguf, f"model '{gguf}'")  # one line for a damaged file, not a traceback
    pick_device("auto")  # converting runs on the CPU: quiets DeepSpeed's no-GPU warning
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf.stem
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
