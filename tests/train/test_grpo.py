"""Stage grpo: group advantages, answer masks and the loss's gradient on hand-worked numbers;
real runs on the tiny model (what the reward functions receive, what trains, metrics, resume
after SIGKILL equal to an uninterrupted run, a stage-rm model as the reward)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.train.helpers import kill_script

from danlu.config import load_config
from danlu.train.engine import train
from danlu.train.grpo import completion_mask, group_advantages, grpo_token_loss, token_logps


def test_advantages_are_standardised_within_each_group():
    adv, std = group_advantages(torch.tensor([1.0, 3.0, 0.0, 0.0, 2.0, 4.0, 6.0, 8.0]), 4)
    assert std.tolist() == pytest.approx([1.2247449, 2.236068], rel=1e-6)
    first = [(r - 1.0) / (1.2247449 + 1e-4) for r in (1.0, 3.0, 0.0, 0.0)]
    assert adv[:4].tolist() == pytest.approx(first, rel=1e-5)
    same, _ = group_advantages(torch.tensor([2.0, 2.0, 2.0]), 3)
    assert same.tolist() == [0.0, 0.0, 0.0]  # one reward for all: nothing to learn


def test_completion_mask_keeps_the_first_stop_and_nothing_after():
    rows = torch.tensor([[5, 6, 2, 7, 2], [5, 9, 6, 6, 6], [2, 0, 0, 0, 0]])
    assert completion_mask(rows, frozenset({2, 9})).tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 0, 0, 0, 0],
    ]


def test_token_logps_reads_each_token_from_the_position_before():
    logits = torch.randn(2, 6, 11)
    ids = torch.randint(0, 11, (2, 6))
    got = token_logps(logits, ids, 3)
    want = torch.stack([logits[:, t - 1].log_softmax(-1).gather(1, ids[:, t : t + 1]).squeeze(1)
                        for t in range(3, 6)], dim=1)  # fmt: skip
    torch.testing.assert_close(got, want)


def test_the_loss_gradient_is_the_advantage_weighted_policy_gradient():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([2.0, -1.0])
    loss, kl = grpo_token_loss(logps, None, adv, mask, beta=0.0)
    loss.backward()
    # d/dlogp of -(A * ratio) averaged per answer, then over the 2 answers
    want = torch.tensor([[-2 / 3 / 2] * 3, [1 / 2 / 2, 1 / 2 / 2, 0.0]])
    torch.testing.assert_close(logps.grad, want)
    assert loss.item() == pytest.approx(-(2.0 - 1.0) / 2) and kl is None


def test_kl_term_is_zero_at_the_reference_and_positive_away_from_it():
    logps = torch.tensor([[-1.0, -2.0]])
    mask = torch.ones(1, 2)
    _, kl = grpo_token_loss(logps, logps.clone(), torch.zeros(1), mask, beta=0.1)
    assert kl == 0.0
    _, kl = grpo_token_loss(logps, logps - 0.5, torch.zeros(1), mask, beta=0.1)
    assert kl == pytest.approx(float(torch.exp(torch.tensor(-0.5)) + 0.5 - 1), rel=1e-6)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grpo") / "prompts.jsonl"
    rows = [{"prompt": f"What is {i} plus {i}?", "solution": str(2 * i)} for i in range(16)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory) -> Path:
    """Longer answers score higher (a random tiny model's answers vary in length); every call
    is checked and logged, so a test can see what the function received."""
    folder = tmp_path_factory.mktemp("rewards")
    path = folder / "rewards.py"
    path.write_text(f"""
import json
LOG = {str(folder / "calls.jsonl")!r}
def longer(prompts, completions, solution, completion_ids, completion_lengths, prompt_ids, **kw):
    assert len(prompts) == len(completions) == len(solution) == len(completion_ids)
    assert [len(c) for c in completion_ids] == completion_lengths
    with open(LOG, "a") as f:
        f.write(json.dumps({{"prompts": prompts, "solution": solution, "n": len(completions),
                             "prompt_ids": prompt_ids}}) + "\\n")
    return [float(len(c)) for c in completions]
""")
    return path


def _cfg(model_dir: Path, data: Path, out: Path, reward: Path, *extra: str):
    return load_config(None, [
        f"model={model_dir}", f"data=[{data}]", f"output_dir={out}", "stage=grpo", "method=lora",
        "lora_rank=4", "max_steps=3", "save_steps=2", "logging_steps=1", "num_generations=4",
        "max_completion_length=8", f"reward_funcs=[python:{reward}:longer]", "pref_beta=0.1",
        "per_device_train_batch_size=2", "learning_rate=1e-2", "threads=1", "report_to=none",
        "cutoff_len=64", "data_cache=false", "lr_scheduler_type=constant", *extra,
    ])  # fmt: skip


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_grpo_trains_the_adapter_from_its_rewards(tiny_model_dir, prompts, reward_file, tmp_path):
    out = tmp_path / "run"
    log = reward_file.parent / "calls.jsonl"
    log.unlink(missing_ok=True)
    result = train(_cfg(tiny_model_dir, prompts, out, reward_file), log=lambda _: None)
    rows = _metrics(out)
    name = f"rewards/python:{reward_file}:longer"
    for key in ("reward", "reward_std", "completion_len", "clipped_ratio", "kl", name, "mfu"):
        assert key in rows[0], key
    assert rows[0]["kl"] == 0  # the first answers come from the reference itself
    assert rows[0]["reward_std"] > 0 and 1 <= rows[0]["completion_len"] <= 8
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 3 and all(c["n"] == 8 for c in calls)  # 2 prompts x 4 answers a step
    first = calls[0]
    assert first["prompts"][:4] == [first["prompts"][0]] * 4  # the 4 answers share one prompt
    i = int(first["prompts"][0].split()[2])
    assert first["prompts"][0] == f"What is {i} plus {i}?" and first["solution"][0] == str(2 * i)
    weights = load_file(result.final_dir / "adapter_model.safetensors")
    assert all(w.abs().sum() > 0 for n, w in weights.items() if "lora_B" in n)  # all moved


@pytest.mark.slow
def test_no_kl_weight_means_no_reference(tiny_model_dir, prompts, reward_file, tmp_path):
    out = tmp_path / "run"
    train(_cfg(tiny_model_dir, prompts, out, reward_file, "pref_beta=0", "max_steps=1"),
          log=lambda _: None)  # fmt: skip
    assert "kl" not in _metrics(out)[0]


@pytest.mark.slow
def test_grpo_resume_after_sigkill_equals_uninterrupted(
    tiny_model_dir, prompts, reward_file, tmp_path
):
    extra = ("max_steps=6", "per_device_train_batch_size=2")
    straight = train(_cfg(tiny_model_dir, prompts, tmp_path / "a", reward_file, *extra),
                     log=lambda _: None)  # fmt: skip
    out = tmp_path / "b"
    Path(f"{out}.yaml").write_text("stage: grpo\n")
    script = kill_script(tiny_model_dir, prompts, out, 4, "stage=grpo", "num_generations=4",
                         "max_completion_length=8", f"reward_funcs=[python:{reward_file}:longer]",
                         "pref_beta=0.1", "lr_scheduler_type=constant", *extra)  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ})  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    resumed = train(_cfg(tiny_model_dir, prompts, out, reward_file, *extra,
                         "resume_from_checkpoint=auto"), log=lambda _: None)  # fmt: skip
    assert resumed.resumed_from == out / "checkpoints" / "step-2"
    a = load_file(straight.final_dir / "adapter_model.safetensors")
    b = load_file(resumed.final_dir / "adapter_model.safetensors")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    assert [r["reward"] for r in _metrics(out)] == [r["reward"] for r in _metrics(tmp_path / "a")]


@pytest.mark.slow
def test_a_reward_model_from_stage_rm_scores_the_answers(tiny_model_dir, prompts, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"instruction": f"{i}+{i}?", "chosen": f"{2 * i}",
                                         "rejected": "no idea"}) + "\n" for i in range(8)))  # fmt: skip
    rm = train(load_config(None, [
        f"model={tiny_model_dir}", f"data=[{pairs}]", f"output_dir={tmp_path / 'rm'}",
        "stage=rm", "method=lora", "lora_rank=4", "max_steps=2", "per_device_train_batch_size=4",
        "threads=1", "report_to=none", "cutoff_len=64", "data_cache=false",
    ]), log=lambda _: None)  # fmt: skip
    out = tmp_path / "run"
    train(_cfg(tiny_model_dir, prompts, out, Path("unused"), f"reward_funcs=[rm:{rm.final_dir}]",
               "max_steps=1"), log=lambda _: None)  # fmt: skip
    row = _metrics(out)[0]
    assert row[f"rewards/rm:{rm.final_dir}"] != 0 and row["reward_std"] > 0
