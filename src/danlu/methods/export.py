"""`danlu export`: a model (+ adapter, merged first) as merged HF safetensors or as a GGUF for
llama.cpp / Ollama, with a Modelfile beside it.

    out/                       --format gguf --quant q4_k_m
      model-q4_k_m.gguf        llama.cpp's converter (f16), then its quantizer
      Modelfile                `ollama create NAME -f out/Modelfile`
    out/                       --format hf
      model.safetensors, config.json, tokenizer files, generation_config.json

The output folder appears complete or not at all (built in a sibling, renamed into place), so
an interrupted export never leaves a GGUF that loads half a model.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from danlu.methods.gguf import FAMILIES, QUANTS
from danlu.models.check import read_json
from danlu.utils.errors import UsageError
from danlu.utils.fs import atomic_dir

FORMATS = ("gguf", "hf")
MAX_OLLAMA_CONTEXT = 8192
"""num_ctx in the Modelfile: the model's context, capped (Ollama reserves the KV cache for it)."""


@dataclass
class Exported:
    out: Path
    files: dict[str, int] = field(default_factory=dict)
    """File name -> bytes."""
    family: str = ""

    def summary(self) -> str:
        sizes = ", ".join(f"{n} ({b / 2**20:.1f} MiB)" for n, b in self.files.items())
        return f"{self.family} model exported to {self.out}: {sizes}"


def export_model(
    model: str, out: str | Path, *, adapter: str | None = None, fmt: str = "gguf",
    quant: str = "f16", template: str = "auto", allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Exported:  # fmt: skip
    """Write `model` (+ `adapter`) to `out` as `fmt`; see the module docstring."""
    dest = Path(out).expanduser()
    _check_request(dest, fmt, quant)
    if (Path(model).expanduser() / "config.json").is_file():
        family_of(Path(model).expanduser(), fmt)  # refused before loading, when it can be
    with tempfile.TemporaryDirectory(prefix=".danlu-export-", dir=_parent(dest)) as tmp:
        hf = Path(tmp) / "hf"
        materialise(model, adapter, hf, allow_pickle, trust_remote_code)
        family = family_of(hf, fmt)
        with atomic_dir(dest) as staging:
            if fmt == "hf":
                for item in hf.iterdir():
                    shutil.move(str(item), staging / item.name)
            else:
                _gguf(hf, staging, quant, template, Path(tmp))
        return Exported(dest, {p.name: p.stat().st_size for p in sorted(dest.iterdir())}, family)


def _parent(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.parent


def _check_request(dest: Path, fmt: str, quant: str) -> None:
    from danlu.utils.paths import check_writable_dir

    if fmt not in FORMATS:
        raise UsageError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    if quant not in QUANTS:
        raise UsageError(f"--quant: '{quant}' is not one of {', '.join(QUANTS)}")
    if fmt == "hf" and quant != "f16":
        raise UsageError("--quant: only --format gguf is quantised (hf writes the merged weights)")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"--out: '{dest}' already exists and is not empty")
    check_writable_dir(dest, "--out")
    if fmt == "gguf":
        from danlu.methods.gguf import converter_script, llama_cpp_version

        converter_script()  # both found before minutes of merging, not after
        if quant != "f16":
            llama_cpp_version()


def materialise(model: str, adapter: str | None, hf: Path, allow_pickle: bool,
                trust_remote_code: bool) -> None:  # fmt: skip
    """The model (merged with `adapter`) as a plain safetensors HF folder."""
    from danlu.config import ModelArgs
    from danlu.models import load_model

    if adapter:
        from danlu.methods.merge import merge_lora

        merge_lora(model, adapter, hf, allow_pickle=allow_pickle)
    else:
        loaded = load_model(ModelArgs(model=model, device="cpu", allow_pickle=allow_pickle,
                                      trust_remote_code=trust_remote_code))  # fmt: skip
        loaded.model.save_pretrained(hf, safe_serialization=True)
        loaded.tokenizer.save_pretrained(hf)


def family_of(hf: Path, fmt: str) -> str:
    """The family's name; a model type the GGUF export does not cover is refused by name."""
    kind = read_json(hf / "config.json", "export").get("model_type", "?")
    if fmt == "hf":
        return kind
    if kind not in FAMILIES:
        raise UsageError(
            f"export: model type '{kind}' is not one danlu exports to GGUF "
            f"(it exports {', '.join(sorted(FAMILIES))}); --format hf writes any model"
        )
    return FAMILIES[kind]


def _gguf(hf: Path, staging: Path, quant: str, template: str, tmp: Path) -> None:
    from danlu.methods.gguf import convert, quantize

    f16 = (staging if quant == "f16" else tmp) / "model-f16.gguf"
    convert(hf, f16)
    final = staging / f"model-{quant}.gguf"
    if quant != "f16":
        quantize(f16, final, quant)
    _write_modelfile(hf, staging, final.name, template)


def _write_modelfile(hf: Path, staging: Path, gguf_name: str, template: str) -> None:
    from danlu.data.templates import get_template, stop_ids
    from danlu.methods.modelfile import modelfile, write_modelfile
    from danlu.models import load_tokenizer

    tok = load_tokenizer(hf)
    config = read_json(hf / "config.json", "export")
    gen_file = hf / "generation_config.json"
    gen = read_json(gen_file, "export") if gen_file.is_file() else {}
    chat = get_template(template, tok) if (template != "auto" or tok.chat_template) else None
    # stop_ids reads a generation config's eos_token_id attribute
    stops = sorted(stop_ids(tok, chat, SimpleNamespace(eos_token_id=gen.get("eos_token_id"))))
    context = min(int(config.get("max_position_embeddings") or 2048), MAX_OLLAMA_CONTEXT)
    text = modelfile(gguf_name, tok, chat.source if chat else None,
                     [tok.convert_ids_to_tokens(i) for i in stops], gen, context)  # fmt: skip
    write_modelfile(staging, text)
