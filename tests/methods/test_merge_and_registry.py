"""LoRA merge, adapter continuation, AdaLoRA's step hook, and the registry's refusals."""

from __future__ import annotations

import pytest
import torch
from tests.methods.helpers import batch, config, load, logits, prepared, train_steps

from danlu.methods import METHODS, get_method, merge_lora, prepare, trainable_names
from danlu.utils.errors import UsageError


@pytest.fixture(scope="module")
def trained_lora(tiny_model_dir, tokenizer, tmp_path_factory):
    model, _ = prepared(tiny_model_dir, "lora", use_dora=True)
    data = batch(tokenizer)
    train_steps(model, "lora", data, steps=3)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out, logits(model, data)


def test_merged_model_matches_base_plus_adapter(trained_lora, tiny_model_dir, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    adapter, expected = trained_lora
    out = merge_lora(tiny_model_dir, adapter, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    assert not list(tmp_path.glob(".merged.tmp-*"))
    merged = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(logits(merged, batch(tokenizer)), expected, atol=1e-4, rtol=0)
    with pytest.raises(UsageError, match="not empty"):
        merge_lora(tiny_model_dir, adapter, out)


def test_merge_refuses_prompt_adapters_and_quantised_bases(tiny_model_dir, tmp_path):
    model, _ = prepared(tiny_model_dir, "prompt")
    model.save_pretrained(tmp_path / "prompt")
    with pytest.raises(UsageError, match="PROMPT_TUNING"):
        merge_lora(tiny_model_dir, tmp_path / "prompt", tmp_path / "m1")
    fake = tmp_path / "qbase"
    fake.mkdir()
    (fake / "config.json").write_text('{"quantization_config": {"load_in_4bit": true}}')
    lora, _ = prepared(tiny_model_dir, "lora")
    lora.save_pretrained(tmp_path / "lora")
    with pytest.raises(UsageError, match="quantised"):
        merge_lora(fake, tmp_path / "lora", tmp_path / "m2")


def test_training_continues_from_an_existing_adapter(trained_lora, tiny_model_dir, tokenizer):
    adapter, expected = trained_lora
    cfg = config("lora", use_dora=True, adapter=str(adapter))
    model = prepare(load(tiny_model_dir, cfg), cfg)  # via ctx.adapter
    torch.testing.assert_close(logits(model, batch(tokenizer)), expected, atol=0, rtol=0)
    attached = load(tiny_model_dir, adapter=str(adapter))  # load_model attached it already
    model2 = prepare(attached, cfg)
    assert trainable_names(model2) == trainable_names(model)
    with pytest.raises(UsageError, match="is LORA, but method 'ia3'"):
        prepare(load(tiny_model_dir), config("ia3", adapter=str(adapter)))


@pytest.mark.slow
def test_adalora_step_hook_prunes_ranks_to_the_budget(tiny_model_dir, tokenizer):
    hook = get_method("adalora").on_step
    assert hook is not None and all(m.on_step is None for n, m in METHODS.items() if n != "adalora")
    model, _ = prepared(tiny_model_dir, "adalora", adalora_total_step=6, adalora_tfinal=1)
    train_steps(model, "adalora", batch(tokenizer), steps=6)
    # After the schedule, the kept singular values equal target_r per matrix on average.
    kept = sum(int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n)
    matrices = sum(1 for n, _ in model.named_parameters() if "lora_E" in n)
    assert kept == 4 * matrices


def test_adalora_needs_a_step_count(tiny_model_dir):
    from danlu.config.load import build_config

    raw = {"method": "adalora"}
    cfg = build_config(raw, dict.fromkeys(raw, "test"), None)
    with pytest.raises(UsageError, match="adalora_total_step"):
        prepare(load(tiny_model_dir), cfg)


def test_unknown_method_and_bad_targets_are_one_line_errors(tiny_model_dir):
    with pytest.raises(UsageError, match="known: adalora"):
        get_method("loar")
    with pytest.raises(UsageError, match="method 'lora'") as err:
        prepare(load(tiny_model_dir), config("lora", lora_target=["no_such_proj"]))
    assert "\n" not in str(err.value)
