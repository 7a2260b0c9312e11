"""The Trainer subclass: exact resume, atomic step-N checkpoints, metrics lines, step hooks."""

from __future__ import annotations

import json

import pytest
import torch

from danlu.train.checkpoint import complete_checkpoints
from danlu.train.metrics import ThroughputMeter
from danlu.train.trainer import build_trainer, count_tokens


def _dataset(n: int = 16):
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    rows = {"input_ids": [], "labels": []}
    for i in range(n):
        length = 6 + i % 5
        ids = torch.randint(10, 200, (length,), generator=g).tolist()
        rows["input_ids"].append(ids)
        rows["labels"].append([-100] * 3 + ids[3:])  # prompt of 3 tokens masked
    return Dataset.from_dict(rows)


def _collate(features):
    width = max(len(f["input_ids"]) for f in features)

    def pad(seq, value):
        return seq + [value] * (width - len(seq))

    return {
        "input_ids": torch.tensor([pad(f["input_ids"], 0) for f in features]),
        "attention_mask": torch.tensor([pad([1] * len(f["input_ids"]), 0) for f in features]),
        "labels": torch.tensor([pad(f["labels"], -100) for f in features]),
    }


def _lora_model(model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))


def _run(model_dir, run_dir, stop_at=None, resume=None, hook=None):
    from transformers import TrainerCallback, TrainingArguments

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if stop_at and state.global_step >= stop_at:
                control.should_training_stop = True

    args = TrainingArguments(
        output_dir=str(run_dir),
        max_steps=6,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_steps=3,
        report_to=[],
        use_cpu=True,
        seed=7,
        data_seed=7,
        disable_tqdm=True,
        remove_unused_columns=False,
        lr_scheduler_type="cosine",
        warmup_steps=1,
    )
    model = _lora_model(model_dir)
    meter = ThroughputMeter(flops_per_token=1e6, peak_flops=1e12)
    trainer = build_trainer(
        run_dir=run_dir,
        meter=meter,
        keep=None,
        on_step=hook,
        model=model,
        args=args,
        train_dataset=_dataset(),
        data_collator=_collate,
        callbacks=[Stop()],
    )
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_resume_gives_the_same_weights(tiny_model_dir, tmp_path):
    straight = _run(tiny_model_dir, tmp_path / "a")
    _run(tiny_model_dir, tmp_path / "b", stop_at=3)
    steps = [s for s, _ in complete_checkpoints(tmp_path / "b")]
    assert steps == [3]
    resumed = _run(tiny_model_dir, tmp_path / "b", resume=tmp_path / "b/checkpoints/step-3")
    assert straight.keys() == resumed.keys() and len(straight) > 0
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_run_dir_layout_metrics_and_hook(tiny_model_dir, tmp_path):
    calls = []
    _run(tiny_model_dir, tmp_path, hook=lambda model, step: calls.append(step))
    assert calls == [0, 1, 2, 3, 4, 5]  # after each optimiser step, before the counter moves
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [3, 6]
    assert not list(tmp_path.glob("checkpoint-*"))
    assert list((tmp_path / "checkpoints" / ".staging").iterdir()) == []
    ckpt = tmp_path / "checkpoints" / "step-6"
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    for r in lines:
        assert r["tokens_per_s"] > 0 and r["loss"] > 0 and r["mem"] > 0 and "grad_norm" in r
    trained = [r["trained_tokens"] for r in lines]
    assert trained == sorted(trained) and trained[-1] > 0
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_count_tokens_excludes_padding_and_untrained():
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
        "labels": torch.tensor([[-100, 6, 7, -100], [5, 6, -100, -100]]),
    }
    # tokens: 3 + 2 real; trained after the shift: [6, 7] and [6]
    assert count_tokens(batch) == (5, 3)
