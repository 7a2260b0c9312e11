"""Stage kto: the loss on hand-worked numbers, the mismatched rows of the KL baseline, and real
runs on the tiny model (the textbook start, what trains, good answers pulled above bad ones)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.train.helpers import metrics_of, stage_config

from danlu.data.collate import KtoCollator
from danlu.train.engine import train
from danlu.train.kto import KtoParams, kl_baseline, kto_loss
from danlu.utils.errors import UsageError


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_kto_loss_against_hand_arithmetic():
    ratios, labels = torch.tensor([1.0, -1.0, 0.5]), torch.tensor([True, False, False])
    losses, metrics = kto_loss(ratios, labels, torch.tensor(0.5), KtoParams(0.1, 2.0, 0.5))
    want = [2.0 * (1 - _sig(0.1 * 0.5)), 0.5 * (1 - _sig(0.1 * 1.5)), 0.5 * (1 - _sig(0.0))]
    assert losses.tolist() == pytest.approx(want, rel=1e-6)
    assert metrics["rewards/chosen"] == pytest.approx(0.1)
    assert metrics["rewards/rejected"] == pytest.approx(-0.025)
    assert metrics["kl"] == pytest.approx(0.5)


def test_a_batch_of_bad_answers_only_has_no_chosen_reward():
    _, metrics = kto_loss(
        torch.tensor([0.3]), torch.tensor([False]), torch.tensor(0.0), KtoParams()
    )
    assert metrics["rewards/chosen"] is None


def test_kl_baseline_is_a_clamped_mean_without_gradient():
    x = torch.tensor([-3.0, 1.0], requires_grad=True)
    assert float(kl_baseline(x)) == 0.0  # mean -1 clamps to 0
    y = torch.tensor([3.0, 1.0], requires_grad=True)
    z0 = kl_baseline(y)
    assert float(z0) == 2.0 and not z0.requires_grad


def test_mismatched_rows_pair_each_prompt_with_the_previous_answer():
    features = [
        {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4], "kto_label": True},
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "kto_label": False},
        {"input_ids": [8, 9, 10, 11, 12], "labels": [-100, -100, -100, 11, 12], "kto_label": True},
    ]
    batch = KtoCollator(pad_id=0)(features)
    rows = [r[r != 0].tolist() for r in batch["input_ids"]]  # pad id 0 appears nowhere else
    assert rows[3:] == [[1, 2, 11, 12], [5, 3, 4], [8, 9, 10, 6, 7]]
    labels = [
        r[m.bool()].tolist() for r, m in zip(batch["labels"], batch["attention_mask"], strict=True)
    ]
    assert labels[3:] == [[-100, -100, 11, 12], [-100, 3, 4], [-100, -100, -100, 6, 7]]
    assert batch["kto_label"].tolist() == [True, False, True]
    assert batch["input_ids"].shape == (6, 5)  # mismatched rows cut to the longest record


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kto") / "kto.jsonl"
    rows = []
    for i in range(16):
        good = i % 2 == 0
        answer = f"It is {2 * i}." if good else f"Maybe {2 * i + 1}, or {i}; I am not sure."
        rows.append({"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                  {"role": "assistant", "content": answer}], "kto_tag": good})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(model_dir: Path, data: Path, out: Path, *extra: str):
    return stage_config(model_dir, data, out, "kto", "max_steps=6", "save_steps=3", *extra)


def _metrics(run: Path) -> list[dict]:
    return metrics_of(run)


@pytest.mark.slow
def test_kto_with_lora_starts_at_one_half_and_separates_good_from_bad(
    tiny_model_dir, labelled, tmp_path
):
    out = tmp_path / "run"
    result = train(_cfg(tiny_model_dir, labelled, out), log=lambda _: None)
    rows = _metrics(out)
    for key in ("rewards/chosen", "rewards/rejected", "kl", "logps/chosen", "logps/rejected"):
        assert key in rows[0], key
    # the policy starts as its reference: every ratio and z0 are 0, every loss 1 - sigmoid(0)
    assert rows[0]["loss"] == pytest.approx(0.5, abs=1e-6) and rows[0]["kl"] == 0
    last = rows[-1]
    assert last["rewards/chosen"] > last["rewards/rejected"] and last["loss"] < 0.5
    weights = load_file(result.final_dir / "adapter_model.safetensors")
    assert any(n.endswith("lora_B.weight") and w.abs().sum() > 0 for n, w in weights.items())


@pytest.mark.slow
def test_full_kto_keeps_a_frozen_copy_as_reference(tiny_model_dir, labelled, tmp_path):
    out = tmp_path / "run"
    result = train(_cfg(tiny_model_dir, labelled, out, "method=full", "max_steps=2",
                        "learning_rate=1e-3"), log=lambda _: None)  # fmt: skip
    assert _metrics(out)[0]["loss"] == pytest.approx(0.5, abs=1e-6)
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(result.final_dir / "model.safetensors")
    assert sorted(n for n in before if not torch.equal(before[n], after[n])) == sorted(before)


def test_kto_refuses_a_precomputed_reference(tiny_model_dir, labelled, tmp_path):
    with pytest.raises(UsageError, match="precompute_ref_log_probs works for stage dpo only"):
        _cfg(tiny_model_dir, labelled, tmp_path / "r", "precompute_ref_log_probs=true")
