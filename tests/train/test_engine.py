"""`danlu train` end to end on a tiny model: run layout, every method, resume after SIGKILL,
accumulation equivalence, packing, vocabulary extension, and the errors a user meets first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.train.helpers import kill_script

from danlu.cli import main
from danlu.config import load_config
from danlu.methods import registry
from danlu.train.args import training_arguments
from danlu.train.checkpoint import complete_checkpoints
from danlu.train.engine import train

QUESTIONS = ["What is tea?", "Name a green tea.", "How hot should water be for oolong tea?",
             "Why rinse pu-erh?", "What is matcha?", "Is white tea strong?"]  # fmt: skip


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "sft.jsonl"
    rows = []
    for i in range(24):
        q = QUESTIONS[i % len(QUESTIONS)]
        rows.append(
            {"instruction": q, "input": "", "output": f"Answer {i}: " + "tea " * (1 + i % 7)}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(model_dir: Path, data: Path, out: Path, *extra: str):
    return load_config(None, [
        f"model={model_dir}", f"data=[{data}]", f"output_dir={out}", "method=lora", "lora_rank=4",
        "max_steps=4", "save_steps=2", "logging_steps=1", "per_device_train_batch_size=4",
        "learning_rate=1e-2", "threads=1", "report_to=none", "cutoff_len=64", "data_cache=false",
        *extra,
    ])  # fmt: skip


def _adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


@pytest.mark.slow
def test_run_layout_and_final_loads_with_plain_peft(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "run"
    (tmp_path / "run.yaml").write_text("method: lora\n")
    code = main(
        [
            "train",
            str(tmp_path / "run.yaml"),
            f"model={tiny_model_dir}",
            f"data=[{data_file}]",
            f"output_dir={out}",
            "lora_rank=4",
            "max_steps=4",
            "save_steps=2",
            "logging_steps=1",
            "val_size=4",
            "eval_steps=2",
            "threads=1",
            "--quiet",
        ]
    )
    assert code == 0
    for name in ("config.yaml", "data_report.json", "metrics.jsonl", "loss.png", "final"):
        assert (out / name).exists(), name
    assert list((out / "tb").iterdir()), "no TensorBoard events"
    assert [s for s, _ in complete_checkpoints(out)] == [2, 4]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "loss" in r]
    assert [r["step"] for r in train_lines] == [1, 2, 3, 4]
    assert [r["step"] for r in lines if "eval_loss" in r] == [2, 4]
    for r in train_lines:
        for key in (
            "lr",
            "grad_norm",
            "tokens_per_s",
            "trained_tokens_per_s",
            "tflops",
            "mfu",
            "mem",
        ):
            assert r[key] > 0, key
    report = json.loads((out / "data_report.json").read_text())
    assert report["summary"].startswith("24 kept")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, out / "final")
    saved = _adapter_weights(out / "checkpoints" / "step-4")
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(saved) == len(loaded) > 0
    assert (out / "final" / "chat_template.jinja").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(registry.METHODS))
def test_every_method_trains_through_the_engine(method, tiny_model_dir, data_file, tmp_path):
    extra = [
        "max_steps=2",
        "save_steps=2",
        f"method={method}",
        "pre_seq_len=4",
        "gradient_checkpointing=true",
        "freeze_trainable_layers=1",
    ]
    if method == "qlora":
        extra.append("quantization_bit=4")
    if method == "adalora":
        extra += ["adalora_init_r=4", "adalora_target_r=2"]
    result = train(_cfg(tiny_model_dir, data_file, tmp_path / method, *extra), log=lambda _: None)
    final = result.final_dir
    if registry.get_method(method).is_adapter:
        peft_type = json.loads((final / "adapter_config.json").read_text())["peft_type"]
        expected = {"lora": "LORA", "qlora": "LORA", "prefix": "PREFIX_TUNING",
                    "ptuning_v2": "PREFIX_TUNING", "prompt": "PROMPT_TUNING", "ptuning": "P_TUNING",
                    "ia3": "IA3", "adalora": "ADALORA"}[method]  # fmt: skip
        assert peft_type == expected
    else:
        assert (final / "model.safetensors").is_file() and (final / "config.json").is_file()
    assert result.global_step == 2 and result.trained_tokens > 0


@pytest.mark.slow
def test_sigkill_during_save_then_resume_matches_uninterrupted(tiny_model_dir, data_file, tmp_path):
    straight = train(
        _cfg(tiny_model_dir, data_file, tmp_path / "a", "max_steps=8"), log=lambda _: None
    )
    out = tmp_path / "b"
    Path(f"{out}.yaml").write_text("method: lora\n")
    proc = subprocess.run(
        [sys.executable, "-c", kill_script(tiny_model_dir, data_file, out, 6)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [s for s, _ in complete_checkpoints(out)] == [2, 4]  # step-6 never appeared
    assert not (out / "final").exists()
    resumed = train(
        _cfg(tiny_model_dir, data_file, out, "max_steps=8", "resume_from_checkpoint=auto"),
        log=lambda _: None,
    )
    assert resumed.resumed_from == out / "checkpoints" / "step-4"
    a, b = _adapter_weights(straight.final_dir), _adapter_weights(resumed.final_dir)
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # lines after step 4 from the killed run were dropped


@pytest.mark.slow
def test_accumulation_equals_one_big_batch(tiny_model_dir, data_file, tmp_path):
    common = ["max_steps=2", "save_steps=100", "lr_scheduler_type=constant", "method=full"]
    big = train(
        _cfg(
            tiny_model_dir,
            data_file,
            tmp_path / "big",
            *common,
            "per_device_train_batch_size=8",
            "gradient_accumulation_steps=1",
        ),
        log=lambda _: None,
    )
    acc = train(
        _cfg(
            tiny_model_dir,
            data_file,
            tmp_path / "acc",
            *common,
            "per_device_train_batch_size=1",
            "gradient_accumulation_steps=8",
        ),
        log=lambda _: None,
    )
    from safetensors.torch import load_file

    wa, wb = (
        load_file(big.final_dir / "model.safetensors"),
        load_file(acc.final_dir / "model.safetensors"),
    )
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=2e-5, msg=name)
    la = [json.loads(x)["loss"] for x in (big.run_dir / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (acc.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert la == pytest.approx(lb, abs=1e-5)
    assert big.trained_tokens == acc.trained_tokens


def test_adalora_regulariser_keeps_its_weight_under_accumulation(
    tiny_model_dir, data_file, tmp_path
):
    # AdaLoRA adds its orthogonality term to every forward's loss, and Trainer sums the
    # micro-batch losses of a step: unscaled, 4 micro-batches trained with 4x the weight.
    common = ["max_steps=2", "save_steps=100", "method=adalora", "adalora_orth_reg_weight=5.0"]
    runs = [
        train(_cfg(tiny_model_dir, data_file, tmp_path / name, *common, *extra), log=print)
        for name, extra in (
            ("big", ["per_device_train_batch_size=4"]),
            ("acc", ["per_device_train_batch_size=1", "gradient_accumulation_steps=4"]),
        )
    ]
    big, acc = (_adapter_weights(r.final_dir) for r in runs)
    for name in big:
        torch.testing.assert_close(acc[name], big[name], rtol=0, atol=2e-5, msg=name)
    assert runs[0].train_loss == pytest.approx(runs[1].train_loss, abs=1e-4)


@pytest.mark.slow
def test_packing_trains_the_same_tokens_in_fewer_rows(tiny_model_dir, data_file, tmp_path):
    one_epoch = ["max_steps=-1", "num_train_epochs=1", "save_steps=100", "cutoff_len=256"]
    plain = train(
        _cfg(tiny_model_dir, data_file, tmp_path / "plain", *one_epoch), log=lambda _: None
    )
    lines: list[str] = []
    packed = train(
        _cfg(tiny_model_dir, data_file, tmp_path / "packed", *one_epoch, "packing=true"),
        log=lines.append,
    )
    assert packed.trained_tokens == plain.trained_tokens > 0
    assert packed.global_step < plain.global_step
    assert any(line.startswith("packing: 24 samples -> ") for line in lines)


def test_output_dir_holding_a_run_is_not_overwritten(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(
        Exception, match=r"already holds a run \(metrics.jsonl\); set resume_from_checkpoint"
    ):
        train(_cfg(tiny_model_dir, data_file, out), log=lambda _: None)


def test_eval_steps_without_held_out_data_is_refused(tiny_model_dir, data_file, tmp_path):
    with pytest.raises(Exception, match="eval_steps: there is no held-out data; set val_size"):
        train(_cfg(tiny_model_dir, data_file, tmp_path / "r", "eval_steps=2"), log=lambda _: None)


def test_fp16_on_cpu_is_refused(tiny_model_dir, data_file, tmp_path):
    with pytest.raises(Exception, match="fp16: float16 mixed precision needs a GPU"):
        train(
            _cfg(tiny_model_dir, data_file, tmp_path / "r", "fp16=true", "device=cpu"),
            log=lambda _: None,
        )


@pytest.mark.slow
def test_new_tokens_start_from_their_pieces_and_travel_with_the_adapter(
    tiny_model_dir, data_file, tmp_path
):
    from danlu.config import ModelArgs
    from danlu.models import load_model

    cfg = _cfg(
        tiny_model_dir,
        data_file,
        tmp_path / "r",
        "new_tokens=[丹炉助手, 泡茶]",
        "max_steps=1",
        "save_steps=1",
        "additional_target=[embed_tokens]",
    )
    result = train(cfg, log=lambda _: None)
    loaded = load_model(ModelArgs(model=str(tiny_model_dir), adapter=str(result.final_dir)))
    tok = loaded.tokenizer
    assert tok.tokenize("丹炉助手") == ["丹炉助手"]
    emb = loaded.model.get_input_embeddings().weight
    assert emb.shape[0] % 64 == 0 and emb.shape[0] >= len(tok)
    # before training, the new row was the mean of its pieces; one step moves it only a little
    from danlu.models import load_tokenizer

    old = load_tokenizer(tiny_model_dir)
    pieces = old("泡茶", add_special_tokens=False)["input_ids"]
    base = load_model(ModelArgs(model=str(tiny_model_dir))).model.get_input_embeddings().weight
    new_id = tok.convert_tokens_to_ids("泡茶")
    assert torch.allclose(emb[new_id], base[pieces].mean(0), atol=0.05)


def test_group_by_length_gets_exact_lengths_without_decoding(tiny_model_dir, data_file, tmp_path):
    from danlu.models import load_tokenizer
    from danlu.train.engine import _data

    cfg = _cfg(tiny_model_dir, data_file, tmp_path / "r", "group_by_length=true")
    (tmp_path / "r").mkdir()
    train_ds, _, _ = _data(cfg, load_tokenizer(tiny_model_dir), lambda _: None)
    assert train_ds["length"] == [len(x) for x in train_ds["input_ids"]]
    args = training_arguments(cfg, tmp_path / "r", "cpu", False)
    assert args.train_sampling_strategy == "group_by_length"
