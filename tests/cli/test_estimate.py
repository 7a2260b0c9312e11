"""`danlu estimate` and `danlu plan` from the command line."""

from __future__ import annotations

import json

import pytest

from danlu.cli import main
from danlu.plan import load_arch

TINY_CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 1000,
    "tie_word_embeddings": True,
    "max_position_embeddings": 512,
}


def test_estimate_json_from_a_config_json_folder(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    rc = main(
        [
            "estimate",
            "--model",
            str(tmp_path),
            "--method",
            "full",
            "--device",
            "cpu",
            "--seq",
            "10",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["params"] == out["trainable"] == 138_048
    assert out["components"]["weights"] == 138_048 * 4  # cpu defaults to fp32
    assert out["setup"]["weights"] == "fp32"


def test_estimate_table_names_every_component(capsys):
    assert (
        main(
            [
                "estimate",
                "--model",
                "llama2-7b",
                "--method",
                "full",
                "--zero",
                "3",
                "--world",
                "8",
                "--gc",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for label in (
        "weights",
        "gradients",
        "optimizer states",
        "fp32 master weights",
        "activations",
        "logits + loss",
        "ZeRO-3 gathered blocks",
        "peak",
        "host RAM",
    ):
        assert label in out


def test_estimate_from_a_run_config(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "model: qwen2.5-0.5b\nmethod: lora\nlora_rank: 16\ncutoff_len: 256\n"
        "per_device_train_batch_size: 2\ndeepspeed: zero2\n"
    )
    assert main(["estimate", "--config", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "qwen2.5-0.5b"
    assert (out["setup"]["lora_rank"], out["setup"]["seq_len"], out["setup"]["zero"]) == (
        16,
        256,
        2,
    )


def test_unknown_model_is_a_one_line_usage_error(capsys):
    assert main(["estimate", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("danlu: error: model 'no-such-model'") and "\n" not in err


def test_hub_id_offline_is_a_one_line_usage_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert main(["estimate", "--model", "someone/not-cached-model"]) == 2
    assert "hub cannot be reached" in capsys.readouterr().err


def test_plan_prints_config_and_launch(capsys):
    rc = main(["plan", "--model", "llama2-7b", "--method", "full", "--gpus", "8x80GB", "--nvlink"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "chosen: zero2" in out and "deepspeed: zero2" in out
    assert "launch: torchrun --nproc_per_node 8 -m danlu train run.yaml" in out


def test_plan_bad_gpus_is_usage_error(capsys):
    assert main(["plan", "--gpus", "lots"]) == 2
    assert "--gpus 'lots'" in capsys.readouterr().err


def test_plan_nothing_fits_exits_1(capsys):
    assert (
        main(
            [
                "plan",
                "--model",
                "llama-65b",
                "--method",
                "full",
                "--gpus",
                "1x24GB",
                "--host-ram-gb",
                "64",
            ]
        )
        == 1
    )
    assert "nothing fits: needs" in capsys.readouterr().out


def test_gguf_metadata_matches_the_table():
    from danlu.models.embedded import embedded_gguf

    try:
        path = embedded_gguf("smollm2-135m-instruct")
    except Exception as e:
        pytest.skip(f"embedded GGUF not installed: {e}")
    arch, known = load_arch(str(path)), load_arch("smollm2-135m")
    assert (
        arch.hidden,
        arch.layers,
        arch.heads,
        arch.kv_heads,
        arch.intermediate,
        arch.vocab,
        arch.tie_embeddings,
    ) == (
        known.hidden,
        known.layers,
        known.heads,
        known.kv_heads,
        known.intermediate,
        known.vocab,
        known.tie_embeddings,
    )
