"""Shared fixtures: the real SmolLM2 tokenizer and tiny random models built around it.

Unit tests need no network and run in seconds: the tokenizer comes from the embedded model
(converted once into DANLU_HOME, then cached), the models are 2-layer random LLaMAs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test saying why (the project must not need it)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/{'/'.join(parts)} (absent on this machine)")
    return path


@pytest.fixture(scope="session")
def smollm_dir() -> Path:
    """HF folder of the real embedded SmolLM2-135M-Instruct (converted once, cached)."""
    from danlu.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tokenizer(smollm_dir: Path):
    from danlu.models import load_tokenizer

    return load_tokenizer(smollm_dir)


def build_tiny_model(
    dest: Path, tokenizer, layers: int = 2, hidden: int = 64, seed: int = 0
) -> Path:
    """Save a random LLaMA (real tokenizer + chat template) to `dest`; return `dest`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer, 64-wide random LLaMA folder with the SmolLM2 tokenizer. Do not modify it."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), tokenizer)
