"""Preference stages (rm, dpo with every pref_loss): the loss formulas on hand-worked numbers,
the answer log-probabilities, and real runs on the tiny model through the one engine (layout,
metrics, which parameters train, the reference, resume after SIGKILL, what final/ loads as)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.train.helpers import kill_script, metrics_of, stage_config, write_pairs

from danlu.train.checkpoint import complete_checkpoints
from danlu.train.engine import train
from danlu.train.preference import PrefParams, answer_logps, dpo_loss, reward_loss
from danlu.utils.errors import UsageError

LN2 = math.log(2)


def _t(*values):
    return torch.tensor(values, dtype=torch.float32)


# --- formulas ------------------------------------------------------------------------------------


def test_answer_logps_sums_only_the_labelled_tokens_after_the_shift():
    vocab = 4
    logits = torch.zeros(1, 4, vocab)  # uniform: every token has log p = -ln 4
    logits[0, 1, 2] = 10.0  # position 1 predicts token 2 almost surely
    labels = torch.tensor([[-100, -100, 2, 3]])  # tokens 2 (predicted at 1) and 3 (at 2)
    logps, counts = answer_logps(logits, labels)
    expected = torch.log_softmax(logits[0, 1], -1)[2] + torch.log_softmax(logits[0, 2], -1)[3]
    assert counts.tolist() == [2]
    torch.testing.assert_close(logps, expected.reshape(1))
    assert logps.item() == pytest.approx(-1.362e-4 - math.log(4), abs=1e-4)


@pytest.mark.parametrize("adapter", [None, "lora", "prefix"])
def test_projecting_only_answer_positions_gives_the_full_numbers(tiny_model_dir, adapter):
    """answer_logps_of (logits_to_keep: the answer positions only) equals the full forward, in
    value and gradient; prompt learning, whose virtual tokens shift positions, runs in full."""
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from danlu.models.logps import answer_logps_of, supports_logits_to_keep

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if adapter == "lora":
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))  # fmt: skip
    elif adapter == "prefix":
        model = get_peft_model(
            model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
        )
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (3, 9))
    mask = torch.tensor([[1] * 9, [1] * 7 + [0] * 2, [1] * 5 + [0] * 4])
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100  # the prompt
    inputs = {"input_ids": ids, "attention_mask": mask}
    got, counts, _ = answer_logps_of(model, inputs, labels)
    grads = torch.autograd.grad(got.sum(), [p for p in model.parameters() if p.requires_grad])
    want, want_counts = answer_logps(model(**inputs).logits, labels)
    expected = torch.autograd.grad(want.sum(), [p for p in model.parameters() if p.requires_grad])
    assert supports_logits_to_keep(model) is (adapter != "prefix")
    assert counts.tolist() == want_counts.tolist() == [5, 3, 1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("loss", "expected"),
    [("sigmoid", LN2), ("ipo", (1 / (2 * 0.1)) ** 2), ("hinge", 1.0)],
)
def test_policy_equal_to_reference_gives_the_textbook_start(loss, expected):
    logps = (_t(-3.0, -5.0), _t(-4.0, -2.0))
    counts = (_t(3, 5), _t(4, 2))
    losses, metrics = dpo_loss(logps, counts, logps, PrefParams(loss=loss, beta=0.1))
    torch.testing.assert_close(losses, _t(expected, expected))
    assert metrics["rewards/margin"].item() == 0 and metrics["rewards/accuracy"].item() == 0


def test_sigmoid_dpo_against_hand_arithmetic():
    # margin = (pc - rc) - (pr - rr) = (-2 - -3) - (-6 - -5) = 2; loss = -log sigmoid(0.5 * 2)
    losses, m = dpo_loss((_t(-2.0), _t(-6.0)), (_t(1), _t(1)), (_t(-3.0), _t(-5.0)),
                         PrefParams("sigmoid", beta=0.5))  # fmt: skip
    assert losses.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(0.5)
    assert m["rewards/rejected"].item() == pytest.approx(-0.5)
    assert m["rewards/accuracy"].item() == 1.0 and m["rewards/margin"].item() == pytest.approx(1.0)


def test_simpo_and_orpo_use_length_averaged_logps_and_no_reference():
    pc, pr, nc, nr = -4.0, -9.0, 2, 3  # averages -2 and -3
    simpo, _ = dpo_loss(
        (_t(pc), _t(pr)), (_t(nc), _t(nr)), None, PrefParams("simpo", 2.0, gamma=0.5)
    )
    assert simpo.item() == pytest.approx(math.log1p(math.exp(-(2.0 * 1.0 - 0.5))), abs=1e-6)
    orpo, _ = dpo_loss((_t(pc), _t(pr)), (_t(nc), _t(nr)), None, PrefParams("orpo", 0.1))
    log_odds = (-2 - -3) - (math.log(1 - math.exp(-2)) - math.log(1 - math.exp(-3)))
    nll = 2.0
    assert orpo.item() == pytest.approx(nll + 0.1 * math.log1p(math.exp(-log_odds)), abs=1e-5)


def test_sft_term_adds_the_chosen_nll_per_token():
    base, _ = dpo_loss((_t(-2.0), _t(-6.0)), (_t(4), _t(1)), (_t(-3.0), _t(-5.0)), PrefParams())
    mixed, _ = dpo_loss((_t(-2.0), _t(-6.0)), (_t(4), _t(1)), (_t(-3.0), _t(-5.0)),
                        PrefParams(ftx=0.5))  # fmt: skip
    assert (mixed - base).item() == pytest.approx(0.5 * 2.0 / 4)


def test_bradley_terry():
    losses, m = reward_loss(_t(1.0, -1.0), _t(0.0, 0.0))
    torch.testing.assert_close(losses, _t(math.log1p(math.exp(-1)), math.log1p(math.exp(1))))
    assert m["rewards/accuracy"].item() == 0.5 and m["rewards/margin"].item() == 0.0


# --- runs -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", 16)


def _cfg(model_dir: Path, data: Path, out: Path, *extra: str):
    return stage_config(model_dir, data, out, "dpo", *extra)


def _metrics(run: Path) -> list[dict]:
    return metrics_of(run)


def _weights(folder: Path, name: str = "adapter_model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(folder / name)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge", "orpo", "simpo"])
def test_dpo_trains_an_adapter_with_every_loss(loss, tiny_model_dir, pairs, tmp_path):
    out = tmp_path / "run"
    result = train(_cfg(tiny_model_dir, pairs, out, f"pref_loss={loss}"), log=lambda _: None)
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin",
                "logps/chosen", "logps/rejected", "loss", "tokens_per_s"):  # fmt: skip
        assert key in rows[0], key
    first = {"sigmoid": LN2, "ipo": 25.0, "hinge": 1.0}.get(loss)
    if first is not None:  # the policy starts as its reference
        assert rows[0]["loss"] == pytest.approx(first, rel=1e-3)
    assert rows[-1]["rewards/margin"] > rows[0]["rewards/margin"]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (result.final_dir / "adapter_config.json").is_file()
    assert complete_checkpoints(out)[-1][0] == 4


@pytest.mark.slow
def test_precomputed_reference_trains_exactly_as_the_adapter_off_reference(
    tiny_model_dir, pairs, tmp_path
):
    live = train(_cfg(tiny_model_dir, pairs, tmp_path / "a"), log=lambda _: None)
    pre = train(_cfg(tiny_model_dir, pairs, tmp_path / "b", "precompute_ref_log_probs=true"),
                log=lambda _: None)  # fmt: skip
    a, b = _weights(live.final_dir), _weights(pre.final_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)
    assert [r["loss"] for r in _metrics(tmp_path / "a")] == pytest.approx(
        [r["loss"] for r in _metrics(tmp_path / "b")], rel=1e-4
    )


@pytest.mark.slow
def test_full_dpo_keeps_a_frozen_reference_and_trains_every_weight(tiny_model_dir, pairs, tmp_path):
    out = tmp_path / "run"
    result = train(
        _cfg(tiny_model_dir, pairs, out, "method=full", "max_steps=2"), log=lambda _: None
    )
    assert _metrics(out)[0]["loss"] == pytest.approx(LN2, rel=1e-3)  # the copy is the start
    before, after = (
        _weights(tiny_model_dir, "model.safetensors"),
        _weights(result.final_dir, "model.safetensors"),
    )
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert sorted(changed) == sorted(before)  # every weight moved


@pytest.mark.slow
def test_dpo_resume_after_sigkill_equals_uninterrupted(tiny_model_dir, pairs, tmp_path):
    straight = train(_cfg(tiny_model_dir, pairs, tmp_path / "a", "max_steps=8"), log=lambda _: None)
    out = tmp_path / "b"
    Path(f"{out}.yaml").write_text("stage: dpo\n")
    script = kill_script(tiny_model_dir, pairs, out, 6, "stage=dpo", "lr_scheduler_type=constant")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ})  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    resumed = train(_cfg(tiny_model_dir, pairs, out, "max_steps=8", "resume_from_checkpoint=auto"),
                    log=lambda _: None)  # fmt: skip
    assert resumed.resumed_from == out / "checkpoints" / "step-4"
    a, b = _weights(straight.final_dir), _weights(resumed.final_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    assert [r["step"] for r in _metrics(out)] == list(range(1, 9))


def _rewards(model, tokenizer, texts: list[str]) -> list[float]:
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**enc).logits.squeeze(-1).tolist()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_reward_model_loads_with_plain_transformers_and_prefers_chosen(
    method, tiny_model_dir, pairs, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "rm"
    result = train(_cfg(tiny_model_dir, pairs, out, "stage=rm", f"method={method}",
                        "max_steps=12", "learning_rate=5e-3"), log=lambda _: None)  # fmt: skip
    rows = _metrics(out)
    assert rows[0]["loss"] == pytest.approx(LN2, abs=0.2)  # a new head starts near 0.5 / 0.5
    assert rows[-1]["rewards/accuracy"] == 1.0 and rows[-1]["loss"] < rows[0]["loss"]
    if method == "full":
        model = AutoModelForSequenceClassification.from_pretrained(result.final_dir)
    else:
        base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
        model = PeftModel.from_pretrained(base, result.final_dir)
    model.eval()
    tok = AutoTokenizer.from_pretrained(result.final_dir)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    chat = [{"role": "user", "content": "What is 3 plus 3?"}]
    texts = [tok.apply_chat_template([*chat, {"role": "assistant", "content": a}], tokenize=False)
             for a in ("It is 6.", "Maybe 7, or 3; I am not sure.")]  # fmt: skip
    good, bad = _rewards(model, tok, texts)
    assert good > bad


def test_unbuilt_stages_say_what_to_use(tiny_model_dir, pairs, tmp_path):
    with pytest.raises(UsageError, match="no longer has a PPO trainer"):
        train(_cfg(tiny_model_dir, pairs, tmp_path / "p", "stage=ppo"), log=lambda _: None)
    assert not (tmp_path / "p").exists()
