"""FLOPs accounting for MFU: exact counts on a tiny model, the PaLM formula, peak lookup."""

import json

import pytest

from danlu.train.flops import FlopsModel, cpu_peak_flops, flops_model, gpu_peak_flops


def test_full_model_counts(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    fm = flops_model(model)
    total = sum(p.numel() for p in model.parameters())  # tied: embedding doubles as LM head
    assert fm.params == total and fm.trainable == total
    assert (fm.layers, fm.hidden) == (2, 64)
    # full fine-tuning: 6N + 12 L H S
    assert fm.per_token(128) == 6 * total + 12 * 2 * 64 * 128


def test_frozen_weights_cost_no_weight_gradient(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for p in model.parameters():
        p.requires_grad_(False)
    fm = flops_model(model)
    assert fm.trainable == 0 and fm.per_token(1) == 4 * fm.params + 12 * 2 * 64


def test_untied_embedding_is_not_a_matmul():
    fm = FlopsModel(params=100, trainable=10, layers=1, hidden=4)
    assert fm.per_token(2) == 4 * 100 + 2 * 10 + 12 * 1 * 4 * 2


@pytest.mark.parametrize(
    "name,tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA A800-SXM4-80GB", 312.0),
        ("NVIDIA GeForce RTX 4090", 165.2),
        ("NVIDIA A10", 125.0),
        ("NVIDIA A10G", 70.0),
    ],
)
def test_gpu_peak_lookup(name, tflops):
    assert gpu_peak_flops(name) == tflops * 1e12


def test_unknown_gpu_has_no_peak():
    assert gpu_peak_flops("Mystery Accelerator 9000") is None


def test_cpu_peak_keeps_the_best_measurement(tmp_path, monkeypatch):
    import danlu.train.flops as flops

    readings = iter([1.5e11, 1.0e11, 2.0e11])  # the second was taken on a busy machine
    monkeypatch.setattr(flops, "measure_matmul_flops", lambda d, seconds: next(readings))
    cache = tmp_path / "peak.json"
    assert cpu_peak_flops("bfloat16", cache) == 1.5e11
    assert cpu_peak_flops("bfloat16", cache) == 1.5e11
    assert cpu_peak_flops("bfloat16", cache) == 2.0e11
    assert list(json.loads(cache.read_text()).values()) == [2.0e11]


def test_mfu_arithmetic_by_hand(tiny_model_dir):
    """The tiny LLaMA (h=64, f=128, 2 layers, 4 heads of 16, 2 kv heads, tied V x h embedding),
    counted on paper, then LoRA r=4 on q_proj only, at 100 tokens/s against a 1 GFLOP/s peak."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from danlu.train.metrics import ThroughputMeter

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    h, f, layers, vocab = 64, 128, 2, model.config.vocab_size
    block = (
        h * h + 2 * (h * 32) + h * h + 3 * h * f + 2 * h
    )  # q, k, v (2 kv heads x 16), o, MLP, norms
    n = vocab * h + layers * block + h  # tied embedding is also the LM head matmul
    lora = layers * 4 * (h + h)  # A: 4 x 64, B: 64 x 4 per q_proj
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"]))
    fm = flops_model(model)
    assert (fm.params, fm.trainable) == (n + lora, lora)
    per_token = 4 * (n + lora) + 2 * lora + 12 * layers * h * 32
    assert fm.per_token(32) == per_token
    clock = iter([0.0, 2.0]).__next__
    meter = ThroughputMeter(flops_per_token=fm.per_token(32), peak_flops=1e9, clock=clock)
    meter.add(tokens=200, trained=50)
    assert meter.window()["mfu"] == round(100 * per_token / 1e9, 4)
