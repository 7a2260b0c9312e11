"""grpo's vLLM sampler: the one-line refusals where it cannot run, the calls it makes to vLLM's
public API (checked against a stand-in for vllm's three names), and on a GPU with vllm a real
run."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from danlu.config import load_config
from danlu.train.grpo_vllm import VllmSampler, check_vllm, completion_tensor
from danlu.utils.errors import UsageError

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_full_finetuning_cannot_hand_its_weights_to_vllm():
    with pytest.raises(UsageError) as e:
        check_vllm("full")
    assert str(e.value) == (
        "use_vllm: serves the adapter to vLLM each round, so it needs method lora or qlora (got "
        "full); set use_vllm: false to sample with transformers"
    )


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_without_vllm_the_run_stops_before_loading(tiny_model_dir, tmp_path):
    from danlu.train.engine import train

    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"prompt": "q", "solution": "1"}) + "\n")
    cfg = load_config(None, [f"model={tiny_model_dir}", f"data=[{data}]", "stage=grpo",
                             "use_vllm=true", f"output_dir={tmp_path / 'run'}"])  # fmt: skip
    with pytest.raises(UsageError, match=r"^use_vllm: vllm is not installed"):
        train(cfg, log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_use_vllm_is_only_for_grpo():
    with pytest.raises(UsageError, match="use_vllm is grpo's sampler"):
        load_config(None, ["stage=dpo", "use_vllm=true"])


class _Policy:
    def __init__(self) -> None:
        self.saved: list[str] = []

    def save_pretrained(self, folder: str) -> None:
        Path(folder).mkdir(parents=True)
        (Path(folder) / "adapter_config.json").write_text("{}")
        self.saved.append(folder)


@pytest.fixture
def fake_vllm(monkeypatch):
    """vllm's SamplingParams and LoRARequest as records of how they were built."""
    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = lambda **kw: ("params", kw)
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda *a: ("lora", a)
    for name, module in {"vllm": vllm, "vllm.lora": types.ModuleType("vllm.lora"),
                         "vllm.lora.request": request}.items():  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)


class _LLM:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def generate(self, prompts, params, lora_request, use_tqdm):
        folder = Path(lora_request[1][2])
        assert (folder / "adapter_config.json").is_file()  # the adapter is there while sampling
        self.calls.append((prompts, params, lora_request))
        n = params[1]["n"]
        choice = lambda toks: types.SimpleNamespace(token_ids=toks)  # noqa: E731
        return [types.SimpleNamespace(outputs=[choice([i, j] * (j + 1)) for j in range(n)])
                for i, _ in enumerate(prompts)]  # fmt: skip


def test_each_round_serves_the_current_adapter_and_keeps_answer_order(fake_vllm):
    llm, policy = _LLM(), _Policy()
    sampler = VllmSampler(llm)
    torch.manual_seed(0)
    rows = sampler.sample(policy, [[1, 2], [3]], 2, 16, 0.7, frozenset({5, 2}))
    assert rows == [[0, 0], [0, 1, 0, 1], [1, 0], [1, 1, 1, 1]]  # prompt i, answer j: i * 2 + j
    prompts, params, lora = llm.calls[0]
    assert prompts == [{"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [3]}]
    kw = params[1]
    assert (kw["n"], kw["max_tokens"], kw["temperature"], kw["stop_token_ids"]) == (
        2,
        16,
        0.7,
        [2, 5],
    )
    torch.manual_seed(0)
    assert kw["seed"] == int(torch.randint(0, 2**31 - 1, ()))  # from torch's (checkpointed) RNG
    assert lora[1][:2] == ("round-1", 1)
    sampler.sample(policy, [[1]], 2, 16, 0.7, frozenset())
    assert llm.calls[1][2][1][:2] == ("round-2", 2)  # a new adapter id: vLLM reloads it
    assert not any(Path(f).exists() for f in policy.saved)  # each round's copy is removed


def test_completion_tensor_right_pads():
    got = completion_tensor([[4, 5, 6], [7]], pad=0, device="cpu")
    assert got.tolist() == [[4, 5, 6], [7, 0, 0]]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(
    not (HAS_VLLM and torch.cuda.is_available()), reason="needs vllm and a CUDA GPU"
)
def test_grpo_samples_with_vllm_on_a_gpu(tiny_model_dir, tmp_path):
    from danlu.train.engine import train

    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i} + 1 =", "solution": str(i + 1)}) + "\n"
                            for i in range(8)))  # fmt: skip
    out = tmp_path / "run"
    train(load_config(None, [
        f"model={tiny_model_dir}", f"data=[{data}]", "stage=grpo", "use_vllm=true",
        "method=lora", "lora_rank=8", "max_steps=2", "num_generations=2",
        "max_completion_length=8", "reward_funcs=[length]", f"output_dir={out}",
        "report_to=none", "data_cache=false",
    ]), log=lambda _: None)  # fmt: skip
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and 1 <= rows[0]["completion_len"] <= 8
