"""The `preference` task: on held-out pairs, how often a model prefers the chosen answer.

- a reward model (stage rm's final/): its reward of chosen > rejected (`accuracy`);
- a policy with an adapter (stage dpo's final/): its implicit reward, log p_policy(answer) -
  log p_reference(answer) with the adapter disabled as the reference, chosen > rejected
  (`accuracy`), as DPO trains it;
- any causal LM, base models included: the model's own log-probability of chosen > rejected
  (`logp_accuracy`), and length-normalised (`avg_logp_accuracy`), so a base model and its
  fine-tune are compared on the same numbers.
Pairs are rendered and masked exactly as training renders them (`encode_pair`).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from danlu.data.collate import PairCollator
from danlu.data.encode import encode_pair
from danlu.eval.forward import length_batches, model_device, progress
from danlu.eval.samples import template_for
from danlu.models.shared_prefix import pair_logps_of
from danlu.utils.errors import UsageError


def encode_pairs(
    convs: list[Any], tokenizer: Any, cfg: Any
) -> tuple[list[dict], list[str], Counter]:
    """(pair rows as the collator takes them, their sources, drop reasons)."""
    template = template_for(cfg.template, tokenizer)
    rows, sources, dropped = [], [], Counter()
    for conv in convs:
        if conv.chosen is None:
            dropped["not a pair (no chosen/rejected)"] += 1
            continue
        pair = encode_pair(conv, tokenizer, template, cfg.section("data"))
        if pair.dropped:
            dropped[pair.dropped] += 1
            continue
        rows.append({f"{side}_{key}": getattr(getattr(pair, side), attr)
                     for side in ("chosen", "rejected")
                     for key, attr in (("input_ids", "input_ids"), ("labels", "labels"))})  # fmt: skip
        sources.append(conv.source)
    return rows, sources, dropped


def run(loaded: Any, cfg: Any, convs: list[Any], quiet: bool) -> tuple[dict, list[dict]]:
    tok, model = loaded.tokenizer, loaded.model
    rows, sources, dropped = encode_pairs(convs, tok, cfg)
    if not rows:
        reasons = ", ".join(f"{n} {r}" for r, n in dropped.items())
        raise UsageError(f"eval_data: no preference pair to score (dropped: {reasons})")
    reward = _is_reward_model(model)
    scores = _score(model, rows, tok.pad_token_id, cfg.per_device_eval_batch_size, reward, quiet)
    out = [{"source": s, **sc} for s, sc in zip(sources, scores, strict=True)]
    return _summary(out, reward, dropped), out


def _is_reward_model(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForSequenceClassification")


def _score(model: Any, rows: list[dict], pad_id: int, size: int, reward: bool, quiet: bool) -> list:
    import torch

    collate, device = PairCollator(pad_id), model_device(model)
    order = length_batches([len(r["chosen_input_ids"]) for r in rows], size)
    scores: list[dict | None] = [None] * len(rows)
    model.eval()
    with torch.inference_mode():
        for batch_index in progress(order, len(order), "preference", quiet):
            batch = {k: v.to(device) for k, v in collate([rows[i] for i in batch_index]).items()}
            for i, score in zip(batch_index, _batch_scores(model, batch, reward), strict=True):
                scores[i] = score
    return scores


def _batch_scores(model: Any, batch: dict, reward: bool) -> list[dict]:
    labels = batch.pop("labels")
    half = labels.shape[0] // 2
    if reward:
        r = model(**batch).logits.squeeze(-1).float()
        return [{"reward_chosen": a, "reward_rejected": b}
                for a, b in zip(r[:half].tolist(), r[half:].tolist(), strict=True)]  # fmt: skip
    logps, counts, _ = pair_logps_of(model, batch, labels)
    ref = None
    if hasattr(model, "disable_adapter"):  # a PeftModel: the base is its reference
        with model.disable_adapter():
            ref, _, _ = pair_logps_of(model, batch, labels)
    out = []
    for i in range(half):
        row = {"logp_chosen": logps[i].item(), "logp_rejected": logps[half + i].item(),
               "tokens_chosen": int(counts[i]), "tokens_rejected": int(counts[half + i])}  # fmt: skip
        if ref is not None:
            row["reward_chosen"] = row["logp_chosen"] - ref[i].item()
            row["reward_rejected"] = row["logp_rejected"] - ref[half + i].item()
        out.append(row)
    return out


def _summary(rows: list[dict], reward: bool, dropped: Counter) -> dict[str, Any]:
    n = len(rows)
    result: dict[str, Any] = {"pairs": n, "scorer": "reward model" if reward else "log-prob"}
    if "reward_chosen" in rows[0]:
        result["accuracy"] = 100 * sum(r["reward_chosen"] > r["reward_rejected"] for r in rows) / n
        result["margin"] = sum(r["reward_chosen"] - r["reward_rejected"] for r in rows) / n
        if not reward:
            result["scorer"] = "implicit reward (adapter vs its base)"
    if not reward:
        result["logp_accuracy"] = 100 * sum(r["logp_chosen"] > r["logp_rejected"] for r in rows) / n
        avg = sum(r["logp_chosen"] / max(r["tokens_chosen"], 1)
                  > r["logp_rejected"] / max(r["tokens_rejected"], 1) for r in rows)  # fmt: skip
        result["avg_logp_accuracy"] = 100 * avg / n
    result["dropped"] = dict(dropped)
    return result


def reward_model_files(model_args: Any) -> bool:
    """Whether `model_args` names a reward model (a stage-rm result), from its files: an adapter
    of task SEQ_CLS, or a model whose architecture is a sequence classifier."""
    import json
    from pathlib import Path

    with contextlib.suppress(OSError, ValueError):
        if model_args.adapter:
            config = json.loads((Path(model_args.adapter) / "adapter_config.json").read_text())
            return config.get("task_type") == "SEQ_CLS"
        config = json.loads((Path(model_args.model) / "config.json").read_text())
        return any(a.endswith("ForSequenceClassification") for a in config.get("architectures", []))
    return False
