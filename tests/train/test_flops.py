"""FLOPs accounting for MFU: exact counts on a tiny model, the PaLM formula, peak lookup."""

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


@pytest.mark.parametrize("name,tflops", [("NVIDIA H100 80GB HBM3", 989.0),
                                         ("NVIDIA A800-SXM4-80GB", 312.0),
                                         ("NVIDIA GeForce RTX 4090", 165.2),
                                         ("NVIDIA A10", 125.0), ("NVIDIA A10G", 70.0)])
def test_gpu_peak_lookup(name, tflops):
    assert gpu_peak_flops(name) == tflops * 1e12


def test_unknown_gpu_has_no_peak():
    assert gpu_peak_flops("Mystery Accelerator 9000") is None


def test_cpu_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    import danlu.train.flops as flops

    calls = []
    monkeypatch.setattr(flops, "measure_matmul_flops", lambda d: calls.append(d) or 1.5e11)
    cache = tmp_path / "peak.json"
    assert cpu_peak_flops("bfloat16", cache) == 1.5e11
    assert cpu_peak_flops("bfloat16", cache) == 1.5e11
    assert calls == ["bfloat16"] and cache.is_file()
