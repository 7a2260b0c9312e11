"""The command line: exit codes, one-line errors, help showing config key docs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from danlu.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_config_check_prints_resolved(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lora_rank: 4\n")
    code, out, err = run_cli(capsys, "config", "check", str(cfg), "learning_rate=3e-4")
    assert code == 0 and err == ""
    assert "lora_rank: 4\n" in out and "learning_rate: 0.0003\n" in out


@pytest.mark.parametrize(
    "content,overrides,message",
    [
        (None, [], "{cfg}: no such config file"),
        ("lora_rnak: 8\n", [], "{cfg}: unknown key 'lora_rnak' (did you mean 'lora_rank'?)"),
        ("cutoff_len: long\n", [], "{cfg}: cutoff_len must be an integer, got 'long'"),
        ("", ["max_steps=-5"], "override 'max_steps=-5': max_steps must be -1 or >= 1, got -5"),
    ],
)
def test_config_check_errors_exit_2_one_line(tmp_path, capsys, content, overrides, message):
    cfg = tmp_path / "c.yaml"
    if content is not None:
        cfg.write_text(content)
    code, out, err = run_cli(capsys, "config", "check", str(cfg), *overrides)
    assert code == 2 and out == ""
    assert err == f"danlu: error: {message.format(cfg=cfg)}\n"


def test_help_documents_config_keys(capsys):
    with pytest.raises(SystemExit) as info:
        main(["config", "check", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "lora_rank (integer): LoRA rank r." in out
    assert "cutoff_len (integer): Maximum tokens per sample" in out


def test_config_keys_subcommand(capsys):
    code, out, _ = run_cli(capsys, "config", "keys", "lora_rank", "seed")
    assert code == 0 and "lora_rank" in out and "seed" in out and "cutoff_len" not in out
    code, _, err = run_cli(capsys, "config", "keys", "lora_rnak")
    assert code == 2 and "did you mean 'lora_rank'" in err


def test_env_json(capsys):
    code, out, _ = run_cli(capsys, "env", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["packages"]["torch"] and info["cpu"]["cores_usable"] >= 1
    assert isinstance(info["gpus"], list) and info["ram_gib"] > 0


def test_env_table(capsys):
    code, out, _ = run_cli(capsys, "env")
    assert code == 0 and out.startswith("python ") and "\ntorch " in out and "\nram " in out


def test_console_script_and_module_entry():
    out = subprocess.run(
        [sys.executable, "-m", "danlu", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("danlu ")


def test_unknown_command_exits_2():
    res = subprocess.run(
        [sys.executable, "-m", "danlu", "frobnicate"], capture_output=True, text=True
    )
    assert res.returncode == 2
