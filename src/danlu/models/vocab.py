"""Vocabulary extension (`new_tokens`, `new_tokens_file`): add tokens, resize, initialise sensibly.

The seeds' recipe for Chinese on a LLaMA-style vocabulary adds whole words as tokens. A new row
initialised at random (or at zero) makes the model's first outputs for that token noise, and the
loss spikes; initialising it as the mean of the embeddings of the pieces the old tokenizer split
the word into keeps the model's behaviour on that text almost unchanged, so training starts from
what the model already knows. The output embedding (when untied) gets the same treatment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError


def read_new_tokens(tokens: list[str], file: str | None) -> list[str]:
    """`new_tokens` followed by the lines of `new_tokens_file`, duplicates removed, order kept."""
    found = list(tokens)
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise UsageError(f"new_tokens_file: {file} does not exist")
        found += [
            line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    return list(dict.fromkeys(found))


def extend_vocabulary(model: Any, tokenizer: Any, tokens: list[str]) -> list[int]:
    """Add `tokens` the tokenizer does not know yet; returns the ids of the added ones.

    Rows for added ids are set to the mean of their old pieces' rows (input and output
    embeddings); the embedding matrices are resized to a multiple of 64 for fast matmuls.
    """
    import torch

    vocab = tokenizer.get_vocab()
    fresh = [t for t in tokens if t not in vocab]
    if not fresh:
        return []
    pieces = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in fresh]
    tokenizer.add_tokens(fresh)
    ids = tokenizer.convert_tokens_to_ids(fresh)
    _resize(model, len(tokenizer))
    with torch.no_grad():
        for matrix in _embedding_matrices(model):
            for new_id, old in zip(ids, pieces, strict=True):
                if old:
                    matrix[new_id] = matrix[old].mean(dim=0)
    return ids


def _embedding_matrices(model: Any) -> list[Any]:
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    if out is None or out.weight is inp:  # tied: one matrix serves both
        return [inp]
    return [inp, out.weight]


def match_vocabulary(model: Any, tokenizer: Any) -> None:
    """Grow the model's embeddings to the tokenizer (an adapter saved after vocabulary extension
    carries the extended tokenizer; its weights only load onto a base of the same size)."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        _resize(model, len(tokenizer))


def _resize(model: Any, size: int) -> None:
    # Multiples of 64 keep the embedding and LM-head matmuls aligned; both callers must pad the
    # same way, or an adapter saved after extension would not fit the base it is loaded onto.
    model.resize_token_embeddings(size, pad_to_multiple_of=64, mean_resizing=False)
