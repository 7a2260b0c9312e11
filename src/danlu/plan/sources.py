"""Find the architecture behind a `--model` value: a table name, an HF folder or config.json,
a .gguf file, or a hub id (its config.json only, from the local cache or, online, the hub).

Only config numbers are read (never weights), so estimating a 70B model costs nothing.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from danlu.plan.arch import Arch
from danlu.utils.errors import UsageError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# model_type values whose config.json omits tie_word_embeddings but ties them
_TIED_BY_DEFAULT = {"bloom", "gpt2", "gpt_neo", "opt", "gemma", "gemma2", "gemma3_text"}
_LAYERNORM = {"bloom", "gpt2", "gpt_neox", "opt", "falcon", "phi"}
_PLAIN_MLP = {"bloom", "gpt2", "gpt_neox", "opt", "falcon", "phi"}


@cache
def known_architectures() -> dict[str, Arch]:
    """The shipped table, by name and alias (lower case)."""
    raw = json.loads(resources.files("danlu.plan").joinpath("architectures.json").read_text())
    table: dict[str, Arch] = {}
    for name, fields in raw.items():
        if name.startswith("_"):
            continue
        fields = dict(fields)
        aliases = tuple(fields.pop("aliases", ()))
        arch = Arch(name=name, aliases=aliases, **fields)
        for key in (name, *aliases):
            table[key.lower()] = arch
    return table


def load_arch(spec: str) -> Arch:
    """Arch for a table name, a folder/config.json, a .gguf file or a hub id."""
    table = known_architectures()
    if spec.lower() in table:
        return table[spec.lower()]
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise UsageError(f"model '{spec}': folder has no config.json, not a HF model folder")
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return arch_from_gguf(path)
        return arch_from_config(_read_json(path), name=spec)
    if _HUB_ID.match(spec):
        return arch_from_config(_hub_config(spec), name=spec)
    names = ", ".join(sorted(a.name for a in set(table.values())))
    raise UsageError(
        f"model '{spec}': no such file or folder, not a hub id, not a known name ({names})"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read config: {e}") from None


def _first(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def arch_from_config(cfg: dict[str, Any], name: str = "model") -> Arch:
    """Arch from the keys of an HF config.json (LLaMA, Qwen2, Mistral, ChatGLM, Bloom, Baichuan...)."""
    cfg = {**cfg, **cfg.get("text_config", {})}  # multimodal configs nest the LM's numbers
    mtype = str(cfg.get("model_type", "")).lower()
    hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(cfg, "num_attention_heads", "n_head")
    vocab = _first(cfg, "padded_vocab_size", "vocab_size")
    if None in (hidden, layers, heads, vocab):
        raise UsageError(f"model '{name}': config.json lacks hidden size, layers, heads or vocab")
    kv = _first(cfg, "num_key_value_heads", default=heads)
    if cfg.get("multi_query_attention"):  # ChatGLM2/3
        kv = cfg.get("multi_query_group_num", 1)
    gated = "inner_hidden_size" not in cfg and mtype not in _PLAIN_MLP
    ffn = _first(cfg, "intermediate_size", "ffn_hidden_size", "inner_hidden_size", "n_inner")
    bias = bool(cfg.get("add_bias_linear")) or mtype == "bloom" or "inner_hidden_size" in cfg
    return Arch(
        name=name,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv,
        vocab=vocab,
        intermediate=ffn or 4 * hidden,
        head_dim=_first(cfg, "head_dim", "kv_channels", default=0),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", mtype in _TIED_BY_DEFAULT)),
        gated_mlp=gated,
        o_bias=bias,
        mlp_bias=bias or bool(cfg.get("mlp_bias")),
        qkv_bias=bias
        or mtype.startswith("qwen2")
        or bool(_first(cfg, "add_qkv_bias", "attention_bias")),
        norm="layer" if mtype in _LAYERNORM or "inner_hidden_size" in cfg else "rms",
        position="alibi" if mtype == "bloom" or cfg.get("alibi") else "rope",
        max_positions=_first(
            cfg, "max_position_embeddings", "seq_length", "n_positions", default=4096
        ),
        embed_norm=mtype == "bloom",
    )


def arch_from_gguf(path: Path) -> Arch:
    """Arch from a GGUF file's metadata (`<arch>.embedding_length`, ...); reads no tensor data."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # a truncated or foreign file
        raise UsageError(f"{path}: not a readable GGUF file: {e}") from None
    meta = {k: _gguf_value(f) for k, f in reader.fields.items()}
    arch = meta.get("general.architecture", "llama")
    tensors = {t.name for t in reader.tensors}
    heads = meta[f"{arch}.attention.head_count"]
    vocab = meta.get(f"{arch}.vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data)
    return Arch(
        name=path.name,
        hidden=meta[f"{arch}.embedding_length"],
        layers=meta[f"{arch}.block_count"],
        heads=heads,
        kv_heads=meta.get(f"{arch}.attention.head_count_kv", heads),
        intermediate=meta[f"{arch}.feed_forward_length"],
        vocab=vocab,
        tie_embeddings="output.weight" not in tensors,
        qkv_bias="blk.0.attn_q.bias" in tensors,
        max_positions=meta.get(f"{arch}.context_length", 4096),
    )


def _gguf_value(field: Any) -> Any:
    if len(field.types) != 1:
        return None  # arrays (token lists): not needed as values
    try:
        return field.contents()  # decodes strings and scalars
    except Exception:  # a value type this gguf version cannot decode
        return None


def _hub_config(repo_id: str) -> dict[str, Any]:
    """config.json of a hub model: the local cache first, the hub only when online."""
    from huggingface_hub import hf_hub_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    for local_only in (True, False) if not offline else (True,):
        try:
            path = hf_hub_download(repo_id, "config.json", local_files_only=local_only)
            return _read_json(Path(path))
        except Exception:  # not cached / no network / no such repo: say so below
            continue
    raise UsageError(
        f"model '{repo_id}': its config.json is not cached and the hub cannot be reached; pass a "
        f"folder or config.json, or a known name (e.g. llama2-7b, qwen2.5-7b)"
    )
