"""Two processes on the CPU (gloo), a tiny model, real launches through `danlu train --nproc 2`:
DDP equals one process with the doubled batch, FSDP and DeepSpeed ZeRO-2/3 train the same
weights and resume from their sharded checkpoints (FSDP onto a different process count)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = [pytest.mark.dist, pytest.mark.slow]

ADAPTER = "adapter_model.safetensors"
MODEL = "model.safetensors"


def _write_data(path: Path) -> Path:
    rows = [{"instruction": f"Question {i} about tea?", "input": "",
             "output": f"Answer {i}: " + "tea " * (1 + i % 7)} for i in range(32)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model_dir) -> Path:
    """A run config every test starts from: 4 steps, a save every 2, global batch 2."""
    folder = tmp_path_factory.mktemp("dist")
    data = _write_data(folder / "sft.jsonl")
    config = folder / "base.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\ndata: [{data}]\nmethod: lora\nlora_rank: 4\nmax_steps: 4\n"
        "save_steps: 2\nlogging_steps: 1\nlearning_rate: 1.0e-2\nreport_to: none\n"
        "cutoff_len: 64\ndata_cache: false\n"
    )
    return config


def _train(config: Path, out: Path, *overrides: str, nproc: int = 1) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "danlu", "train", str(config), f"output_dir={out}", "--quiet"]
    argv += [*overrides, *(["--nproc", str(nproc)] if nproc > 1 else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(folder / name)


def _assert_same(a: dict, b: dict, atol: float) -> None:
    common = set(a) & set(b)
    assert common and set(a) <= set(b)  # a full model may also save the tied head
    for key in common:
        torch.testing.assert_close(a[key].float(), b[key].float(), atol=atol, rtol=0)


def _resume_from_step_2(run: Path, into: Path, config: Path, *overrides: str, nproc: int) -> Path:
    """Copy `run` as if killed after step 2's save, resume it, return its final/."""
    shutil.copytree(run, into)
    shutil.rmtree(into / "checkpoints" / "step-4")
    shutil.rmtree(into / "final")
    _train(config, into, "resume_from_checkpoint=auto", *overrides, nproc=nproc)
    return into / "final"


@pytest.fixture(scope="module")
def one_lora(base, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "lora"
    _train(base, out, "per_device_train_batch_size=2")
    return out


@pytest.fixture(scope="module")
def one_full(base, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "full"
    _train(base, out, "per_device_train_batch_size=2", "method=full", "learning_rate=1e-4")
    return out


def test_ddp_two_processes_equal_one_process_with_the_doubled_batch(base, tmp_path):
    # two epochs of 8 records: each epoch's shuffle must be the one process's, split in two
    data = json.dumps([{"path": str(base.parent / "sft.jsonl"), "max_samples": 8}])
    epochs = [f"data={data}", "max_steps=-1", "num_train_epochs=2", "save_steps=4"]
    one, two = tmp_path / "one", tmp_path / "ddp"
    _train(base, one, *epochs, "per_device_train_batch_size=2")
    proc = _train(base, two, *epochs, "per_device_train_batch_size=1", nproc=2)
    _assert_same(_weights(one / "final", ADAPTER), _weights(two / "final", ADAPTER), 1e-5)
    assert proc.stdout.splitlines().count(str(two / "final")) == 1  # one answer for the job
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))  # rank 0 alone writes
    assert [r["trained_tokens"] for r in records] == [r["trained_tokens"] for r in single]
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in single], abs=1e-4)
    assert all(r["tokens_per_s"] == pytest.approx(2 * r["tokens_per_s_per_device"], abs=0.02)
               for r in records)  # fmt: skip
    step4 = sorted(p.name for p in (two / "checkpoints" / "step-4").glob("rng_state_*"))
    assert step4 == ["rng_state_0.pth", "rng_state_1.pth"]  # each rank's RNG, for exact resume


def _pairs(base: Path) -> Path:
    pairs = base.parent / "pairs.jsonl"
    rows = [{"instruction": f"Question {i} about tea?", "chosen": f"Answer {i}: tea.",
             "rejected": f"No idea about {i}."} for i in range(16)]  # fmt: skip
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return pairs


@pytest.fixture(scope="module")
def one_dpo(base, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "dpo"
    _train(base, out, "stage=dpo", f"data=[{_pairs(base)}]", "save_steps=4",
           "per_device_train_batch_size=2")  # fmt: skip
    return out


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "zero2", "zero3"])
def test_dpo_on_two_processes_equals_one_process_with_the_doubled_batch(
    strategy, base, one_dpo, tmp_path
):
    """The reference (the adapter switched off) and the pair losses under every strategy."""
    if strategy.startswith("zero"):
        pytest.importorskip("deepspeed")
    flag = {"ddp": "distributed=ddp", "fsdp": "distributed=fsdp"}.get(
        strategy, f"deepspeed={strategy}"
    )
    two = tmp_path / strategy
    _train(base, two, "stage=dpo", f"data=[{_pairs(base)}]", "save_steps=4",
           "per_device_train_batch_size=1", flag, nproc=2)  # fmt: skip
    # DDP averages the two ranks' one-pair losses where one process averages two pairs: equal
    # in exact arithmetic; in float32 the order differs, and lr 1e-2 carries it to ~4e-5.
    _assert_same(_weights(one_dpo / "final", ADAPTER), _weights(two / "final", ADAPTER), 1e-4)
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (one_dpo / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "rewards/accuracy", "rewards/margin", "logps/chosen"):  # over both ranks
        assert [r[key] for r in records] == pytest.approx([r[key] for r in single], abs=1e-3), key


@pytest.mark.parametrize("stage", ["kto", "grpo"])
def test_ddp_kto_and_grpo_train_on_two_processes(stage, base, tmp_path):
    """Their cross-rank steps (kto's KL baseline, the metrics of both) meet on every rank: the
    job ends, rank 0 logs each step once, every LoRA B matrix moved."""
    data = base.parent / f"{stage}.jsonl"
    if stage == "kto":
        rows = [{"instruction": f"Question {i}?", "output": f"Answer {i}.", "kto_tag": i % 2 == 0}
                for i in range(16)]  # fmt: skip
        extra = ["per_device_train_batch_size=2"]
    else:
        rows = [{"prompt": f"Question {i}?", "solution": str(i)} for i in range(16)]
        reward = base.parent / "reward.py"
        reward.write_text("def longer(prompts, completions, **kw):\n"
                          "    return [float(len(c)) for c in completions]\n")  # fmt: skip
        extra = ["per_device_train_batch_size=1", "num_generations=2", "max_completion_length=6",
                 f"reward_funcs=[python:{reward}:longer]"]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / stage
    _train(base, out, f"stage={stage}", f"data=[{data}]", *extra, nproc=2)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert ("kl" if stage == "kto" else "reward") in records[0]
    weights = _weights(out / "final", ADAPTER)
    assert all(w.abs().sum() > 0 for n, w in weights.items() if "lora_B" in n)


def test_fsdp_lora_trains_the_same_and_resumes_on_one_process(base, one_lora, tmp_path):
    run = tmp_path / "fsdp"
    _train(base, run, "per_device_train_batch_size=1", "distributed=fsdp", nproc=2)
    final = _weights(run / "final", ADAPTER)
    _assert_same(_weights(one_lora / "final", ADAPTER), final, 1e-5)
    assert (run / "checkpoints" / "step-2" / "trainable.safetensors").is_file()
    assert not (run / "final" / "trainable.safetensors").exists()  # final/ is plain PEFT
    resumed = _resume_from_step_2(run, tmp_path / "again", base, "per_device_train_batch_size=2",
                                  nproc=1)  # fmt: skip
    _assert_same(final, _weights(resumed, ADAPTER), 1e-6)


def test_fsdp_full_finetuning_matches_one_process(base, one_full, tmp_path):
    run = tmp_path / "fsdp-full"
    _train(base, run, "per_device_train_batch_size=1", "distributed=fsdp", "method=full",
           "learning_rate=1e-4", "fsdp_sharding=shard_grad_op", nproc=2)  # fmt: skip
    _assert_same(_weights(one_full / "final", MODEL), _weights(run / "final", MODEL), 1e-5)


def test_zero2_trains_the_same_and_resumes(base, one_lora, tmp_path):
    pytest.importorskip("deepspeed")
    run, args = tmp_path / "z2", ("per_device_train_batch_size=1", "deepspeed=zero2")
    _train(base, run, *args, nproc=2)
    final = _weights(run / "final", ADAPTER)
    _assert_same(_weights(one_lora / "final", ADAPTER), final, 1e-5)
    assert json.loads((run / "deepspeed.json").read_text())["train_batch_size"] == 2
    resumed = _resume_from_step_2(run, tmp_path / "again", base, *args, nproc=2)
    _assert_same(final, _weights(resumed, ADAPTER), 1e-6)


def test_zero3_full_finetuning_trains_the_same_and_resumes(base, one_full, tmp_path):
    pytest.importorskip("deepspeed")
    run = tmp_path / "z3"
    args = ("per_device_train_batch_size=1", "deepspeed=zero3", "method=full", "learning_rate=1e-4")
    _train(base, run, *args, nproc=2)
    final = _weights(run / "final", MODEL)
    _assert_same(_weights(one_full / "final", MODEL), final, 1e-5)
    resumed = _resume_from_step_2(run, tmp_path / "again", base, *args, nproc=2)
    _assert_same(final, _weights(resumed, MODEL), 1e-6)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_rendezvous_and_hybrid_shard(base, one_lora, tmp_path):
    """Two 'nodes' on this machine, each started as its own `danlu train node_rank=N` (what
    `--print-launch` tells a user to run on each node): torchrun's c10d rendezvous at the master
    address, and FSDP hybrid sharding over a (2 nodes x 1 process) mesh."""
    out, port = tmp_path / "nodes", _free_port()
    argv = [sys.executable, "-m", "danlu", "train", str(base), f"output_dir={out}", "--quiet",
            "per_device_train_batch_size=1", "distributed=fsdp", "fsdp_sharding=hybrid_shard",
            "nnodes=2", "master_addr=127.0.0.1", f"master_port={port}"]  # fmt: skip
    nodes = [subprocess.Popen([*argv, f"node_rank={rank}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]  # fmt: skip
    results = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, results, strict=True):
        assert node.returncode == 0, err[-4000:]
        assert f"--nnodes 2 --node_rank {nodes.index(node)} --master_addr 127.0.0.1" in err
    _assert_same(_weights(one_lora / "final", ADAPTER), _weights(out / "final", ADAPTER), 1e-5)
