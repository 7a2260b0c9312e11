"""`danlu eval` preference task: a base model scored by its own log-probabilities, a dpo adapter
by its implicit reward against its base, a reward model by its reward; numbers checked against
a direct computation, and what a reward model cannot do refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.train.helpers import write_pairs

from danlu.config import load_config
from danlu.eval import evaluate
from danlu.utils.errors import UsageError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", 12)


def _train(stage: str, model: Path, data: Path, out: Path) -> Path:
    from danlu.train.engine import train

    cfg = load_config(None, [
        f"model={model}", f"data=[{data}]", f"output_dir={out}", f"stage={stage}",
        "method=lora", "lora_rank=4", "max_steps=6", "save_steps=100", "logging_steps=1",
        "per_device_train_batch_size=4", "learning_rate=1e-2", "threads=1", "report_to=none",
        "cutoff_len=64", "data_cache=false",
    ])  # fmt: skip
    return train(cfg, log=lambda _: None).final_dir


def _eval(model: Path, data: Path, out: Path, *models: dict, tasks=("preference",)) -> dict:
    cfg = load_config(None, [f"model={model}", f"eval_data=[{data}]", f"eval_output_dir={out}",
                             f"eval_task={list(tasks)}", "per_device_eval_batch_size=4"])  # fmt: skip
    if models:
        cfg = cfg.replace(eval_models=list(models))
    return evaluate(cfg, log=lambda _: None, quiet=True)


def test_base_dpo_and_reward_model_on_the_same_pairs(tiny_model_dir, pairs, tmp_path):
    dpo = _train("dpo", tiny_model_dir, pairs, tmp_path / "dpo")
    rm = _train("rm", tiny_model_dir, pairs, tmp_path / "rm")
    report = _eval(tiny_model_dir, pairs, tmp_path / "eval",
                   {"path": str(tiny_model_dir), "name": "base"},
                   {"path": str(tiny_model_dir), "adapter": str(dpo), "name": "dpo"},
                   {"path": str(tiny_model_dir), "adapter": str(rm), "name": "rm"})  # fmt: skip
    results = report["tasks"]["preference"]["results"]
    base, tuned, reward = results["base"], results["dpo"], results["rm"]
    assert base["pairs"] == tuned["pairs"] == reward["pairs"] == 12
    assert "accuracy" not in base and base["scorer"] == "log-prob"
    assert tuned["scorer"] == "implicit reward (adapter vs its base)"
    assert reward["scorer"] == "reward model" and "logp_accuracy" not in reward
    assert tuned["accuracy"] == 100.0 and tuned["margin"] > 0  # it learned these very pairs
    assert reward["accuracy"] == 100.0
    rows = [json.loads(x) for x in Path(tuned["predictions"]).read_text().splitlines()]
    expected = sum(r["reward_chosen"] > r["reward_rejected"] for r in rows) * 100 / len(rows)
    assert tuned["accuracy"] == expected
    base_rows = [json.loads(x) for x in Path(base["predictions"]).read_text().splitlines()]
    # the implicit reward is the adapter's log-prob minus the base's: check one pair by hand
    assert rows[0]["reward_chosen"] == pytest.approx(
        rows[0]["logp_chosen"] - base_rows[0]["logp_chosen"], abs=1e-4
    )
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "pair accuracy %" in md


def test_a_reward_model_only_scores_pairs(tiny_model_dir, pairs, tmp_path):
    rm = _train("rm", tiny_model_dir, pairs, tmp_path / "rm")
    with pytest.raises(UsageError, match=r"is a reward model: it scores pairs"):
        _eval(tiny_model_dir, pairs, tmp_path / "e",
              {"path": str(tiny_model_dir), "adapter": str(rm), "name": "rm"},
              tasks=("preference", "perplexity"))  # fmt: skip


def test_logp_accuracy_matches_a_direct_forward(tiny_model_dir, pairs, tmp_path, tokenizer):
    from danlu.config import ModelArgs
    from danlu.config.sections import DataSource
    from danlu.eval.preference import encode_pairs
    from danlu.eval.samples import read_conversations
    from danlu.models import load_model
    from danlu.models.logps import answer_logps

    report = _eval(tiny_model_dir, pairs, tmp_path / "e")
    got = report["tasks"]["preference"]["results"][str(tiny_model_dir)]
    cfg = load_config(None, [f"model={tiny_model_dir}"])
    convs, _ = read_conversations([DataSource(str(pairs))], "error", None)
    rows, _, _ = encode_pairs(convs, tokenizer, cfg)
    model = load_model(ModelArgs(model=str(tiny_model_dir), device="cpu")).model.eval()
    wins = 0
    with torch.no_grad():
        for r in rows:
            scores = []
            for side in ("chosen", "rejected"):
                ids = torch.tensor([r[f"{side}_input_ids"]])
                labels = torch.tensor([r[f"{side}_labels"]])
                scores.append(answer_logps(model(input_ids=ids).logits, labels)[0].item())
            wins += scores[0] > scores[1]
    assert got["logp_accuracy"] == pytest.approx(100 * wins / len(rows))
