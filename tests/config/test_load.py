"""Config loading: exact one-line errors, overrides, round trip, docs for every key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from danlu.config import SECTIONS, ConfigError, dump_config, load_config, save_config
from danlu.config.schema import key_index
from danlu.utils.docstrings import field_docs

DESIGN_EXAMPLE = """\
model: smollm2-135m-instruct
stage: sft
method: lora
data:
  - path: examples/data/identity.jsonl
    format: auto
    weight: 1
  - path: data/general.json
    weight: 5
    columns: {prompt: content, response: summary}
template: auto
cutoff_len: 1024
lora_rank: 8
learning_rate: 1.0e-4
per_device_train_batch_size: 4
gradient_accumulation_steps: 4
max_steps: 1000
save_steps: 200
output_dir: runs/identity-lora
"""


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_design_example_loads_with_types(tmp_path):
    cfg = load_config(write(tmp_path, DESIGN_EXAMPLE))
    assert cfg.lora_rank == 8 and cfg.learning_rate == pytest.approx(1e-4)
    assert [s.path for s in cfg.data] == ["examples/data/identity.jsonl", "data/general.json"]
    assert [s.weight for s in cfg.data] == [1.0, 5.0]
    assert cfg.data[1].columns == {"prompt": "content", "response": "summary"}
    assert cfg.section("lora").lora_rank == 8


def test_missing_file():
    assert error_of("nope/missing.yaml") == "nope/missing.yaml: no such config file"


def test_unknown_key_names_closest(tmp_path):
    path = write(tmp_path, "lora_rnak: 8\n")
    assert error_of(path) == f"{path}: unknown key 'lora_rnak' (did you mean 'lora_rank'?)"


def test_unknown_key_without_close_match(tmp_path):
    path = write(tmp_path, "zzzzzz: 1\n")
    assert error_of(path) == f"{path}: unknown key 'zzzzzz'"


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, "lora_rank: eight\n")
    assert error_of(path) == f"{path}: lora_rank must be an integer, got 'eight'"


def test_wrong_literal(tmp_path):
    path = write(tmp_path, "stage: finetune\n")
    assert (
        error_of(path)
        == f"{path}: stage must be one of pt | sft | rm | dpo | kto | ppo | grpo, got 'finetune'"
    )


def test_range_rule_names_key_and_value(tmp_path):
    path = write(tmp_path, "learning_rate: -0.1\n")
    assert error_of(path) == f"{path}: learning_rate must be > 0, got -0.1"


def test_cross_key_rule(tmp_path):
    path = write(tmp_path, "bf16: true\nfp16: true\n")
    assert error_of(path) == f"{path}: bf16=True, fp16=True: cannot both be true"


def test_bad_override_value():
    msg = error_of(None, ["lora_rank=abc"])
    assert msg == "override 'lora_rank=abc': lora_rank must be an integer, got 'abc'"


def test_override_without_equals():
    assert error_of(None, ["lora_rank"]) == "override 'lora_rank': expected key=value"


def test_unknown_override_key():
    msg = error_of(None, ["learnin_rate=1"])
    assert (
        msg
        == "override 'learnin_rate=1': unknown key 'learnin_rate' (did you mean 'learning_rate'?)"
    )


def test_bad_data_entry_key(tmp_path):
    path = write(tmp_path, "data:\n  - path: a.json\n    colums: {}\n")
    assert (
        error_of(path) == f"{path}: unknown key 'data[0].colums' (did you mean 'data[0].columns'?)"
    )


def test_data_entry_needs_path(tmp_path):
    path = write(tmp_path, "data:\n  - weight: 2\n")
    assert error_of(path) == f"{path}: data[0] needs key 'path'"


def test_invalid_yaml_names_line(tmp_path):
    path = write(tmp_path, "model: a\nlora_rank: [1,\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}:3: invalid YAML:") and "\n" not in msg


def test_yaml_not_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    assert error_of(path) == f"{path}: expected a mapping of key: value, got list"


def test_overrides_win_and_parse_types(tmp_path):
    path = write(tmp_path, DESIGN_EXAMPLE)
    cfg = load_config(
        path,
        [
            "lora_rank=16",
            "bf16=true",
            "lora_target=q_proj,v_proj",
            "learning_rate=2e-5",
            "data=x.jsonl",
        ],
    )
    assert cfg.lora_rank == 16 and cfg.bf16 is True
    assert cfg.lora_target == ["q_proj", "v_proj"]
    assert cfg.learning_rate == pytest.approx(2e-5)
    assert [s.path for s in cfg.data] == ["x.jsonl"]


def test_yaml11_exponent_without_dot_is_a_float(tmp_path):
    # PyYAML reads `1e-4` as a string; a float field must still accept it.
    cfg = load_config(write(tmp_path, "learning_rate: 1e-4\n"))
    assert cfg.learning_rate == pytest.approx(1e-4)


def test_bool_is_not_an_int(tmp_path):
    path = write(tmp_path, "lora_rank: true\n")
    assert error_of(path) == f"{path}: lora_rank must be an integer, got True"


def test_dump_round_trip(tmp_path):
    cfg = load_config(write(tmp_path, DESIGN_EXAMPLE), ["lora_target=q_proj,v_proj"])
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(out)
    assert again.to_dict() == cfg.to_dict()
    assert dump_config(again) == out.read_text(encoding="utf-8")


def test_defaults_pass_every_rule():
    load_config(None)  # raises if a default broke a rule


def test_keys_are_unique_and_documented():
    index = key_index()
    total = sum(len(dataclasses.fields(cls)) for cls in SECTIONS.values())
    assert len(index) == total
    for cls in SECTIONS.values():
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert missing == [], f"{cls.__name__} fields without a docstring: {missing}"


def test_replace_validates():
    cfg = load_config(None)
    assert cfg.replace(lora_rank=4).lora_rank == 4
    with pytest.raises(ConfigError, match="lora_rank must be >= 1, got 0"):
        cfg.replace(lora_rank=0)
