"""DeepSpeed configs: presets ship and parse, `auto` values come from the danlu config, and a
JSON that disagrees with the config stops the run naming both keys."""

from __future__ import annotations

import json

import pytest

from danlu.config import ConfigError, load_config
from danlu.plan.fromconfig import DEEPSPEED
from danlu.train.dsconfig import PRESETS, deepspeed_config, preset_path, zero_stage
from danlu.utils.errors import UsageError


def _cfg(*extra: str):
    return load_config(None, ["per_device_train_batch_size=4", "gradient_accumulation_steps=2",
                              "max_grad_norm=0.5", "bf16=true", *extra])  # fmt: skip


def test_presets_ship_with_the_package_and_match_the_planner():
    assert set(PRESETS) == set(DEEPSPEED)  # `danlu plan` recommends exactly these names
    for name in PRESETS:
        config = json.loads(preset_path(name).read_text())
        stage, optimizer_offload, param_offload = DEEPSPEED[name]
        zero = config["zero_optimization"]
        assert zero_stage(config) == stage
        assert zero.get("offload_optimizer", {}).get("device", "none") == optimizer_offload
        assert zero.get("offload_param", {}).get("device", "none") == param_offload


@pytest.mark.parametrize("name", PRESETS)
def test_auto_values_are_filled_from_the_config(name, tmp_path):
    config = deepspeed_config(_cfg(f"deepspeed={name}"), world_size=4, run_dir=tmp_path)
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 2
    assert config["train_batch_size"] == 4 * 2 * 4
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False
    assert "flops_profiler" not in config


def test_a_user_json_that_disagrees_is_refused_naming_both_keys(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "zero_optimization": {
        "stage": 2}}))  # fmt: skip
    with pytest.raises(UsageError) as info:
        deepspeed_config(_cfg(f"deepspeed={path}"), 1, tmp_path)
    assert str(info.value) == (
        f"deepspeed {path}: train_micro_batch_size_per_gpu is 8 but per_device_train_batch_size "
        'is 4; set it to "auto" (danlu fills it) or make the two agree'
    )
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 4, "gradient_clipping": 0.5}))
    config = deepspeed_config(_cfg(f"deepspeed={path}"), 2, tmp_path)  # agreeing values pass
    assert config["train_batch_size"] == 16 and config["bf16"] == {"enabled": True}


def test_bad_specs_and_unsupported_combinations(tmp_path):
    with pytest.raises(ConfigError, match=r"deepspeed must be a preset \(zero1, .*got 'zero4'"):
        _cfg("deepspeed=zero4")  # the rule table refuses it before any run starts
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "zero_optimization": {"stage": 2,}\n}')
    with pytest.raises(UsageError, match=r"broken.json:2: invalid JSON"):
        deepspeed_config(_cfg(f"deepspeed={broken}"), 1, tmp_path)
    stage3 = tmp_path / "z3.json"
    stage3.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(UsageError, match="ZeRO-3 shards every parameter, and a 4-bit"):
        deepspeed_config(_cfg(f"deepspeed={stage3}", "method=qlora", "quantization_bit=4"), 1,
                         tmp_path)  # fmt: skip
    with pytest.raises(UsageError, match="so optim must be adamw_torch, got 'sgd'"):
        deepspeed_config(_cfg("deepspeed=zero2_offload", "optim=sgd"), 1, tmp_path)


def test_flops_profiler_and_nvme_path(tmp_path):
    config = deepspeed_config(
        _cfg("deepspeed=zero3_nvme", "deepspeed_flops_profiler=true", "nvme_path=/nvme0"),
        8,
        tmp_path,
    )
    assert config["flops_profiler"]["enabled"] is True
    assert config["flops_profiler"]["output_file"] == str(tmp_path / "flops_profile.txt")
    zero = config["zero_optimization"]
    assert zero["offload_param"]["nvme_path"] == zero["offload_optimizer"]["nvme_path"] == "/nvme0"
