"""Shared pieces of the method tests: small per-method settings, a batch, a tiny training loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from danlu.config import ModelArgs
from danlu.config.load import build_config
from danlu.methods import get_method, prepare

# Small settings so every method trains in well under a second on the tiny model.
SMALL: dict[str, Any] = {
    "lora_rank": 4,
    "pre_seq_len": 4,
    "prompt_encoder_hidden_size": 16,
    "adalora_init_r": 6,
    "adalora_target_r": 4,
    "adalora_total_step": 20,
    "freeze_trainable_layers": 1,
}


def config(method: str, **extra: Any):
    raw = {**SMALL, "method": method, **extra}
    if method == "qlora":
        raw.setdefault("quantization_bit", 4)
    return build_config(raw, dict.fromkeys(raw, "test"), None)


def load(model_dir: Path, cfg=None, **kw: Any) -> Any:
    from danlu.models import load_model

    quant = cfg.quantization_bit if cfg is not None else None
    args = ModelArgs(model=str(model_dir), device="cpu", quantization_bit=quant, **kw)
    return load_model(args, for_training=True).model


def batch(tokenizer) -> dict[str, torch.Tensor]:
    texts = ["丹炉 trains small models.", "Hello there, how are you doing today?"]
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": labels,
    }


def train_steps(
    model: Any, method: str, data: dict, steps: int = 3, lr: float = 1e-2
) -> list[float]:
    """A minimal loop the way the engine will run it, including the method's step hook."""
    hook = get_method(method).on_step
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        loss = model(**data).loss
        loss.backward()
        opt.step()
        if hook is not None:
            hook(model, step)
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def prepared(model_dir: Path, method: str, **extra: Any) -> tuple[Any, Any]:
    cfg = config(method, **extra)
    return prepare(load(model_dir, cfg), cfg, total_steps=20), cfg


def logits(model: Any, data: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
