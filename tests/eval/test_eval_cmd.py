"""`danlu eval` end to end on the tiny model: several models side by side, one report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from danlu.cli import main

from .conftest import EXAMPLES


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter on the tiny model with random (non-zero) B, so its scores differ."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    out = tmp_path_factory.mktemp("lora")
    model.save_pretrained(out)
    return out


def write_cfg(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(text, encoding="utf-8")
    return cfg


def test_compare_two_models_writes_one_report(tiny_model_dir, lora_dir, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = write_cfg(
        tmp_path,
        f"""
model: {tiny_model_dir}
eval_models:
  - {{path: {tiny_model_dir}, name: base}}
  - {lora_dir}
eval_data:
  - path: {EXAMPLES}/data/identity_eval.jsonl
    max_samples: 4
  - {EXAMPLES}/data/tea_eval.jsonl
mc_data: {EXAMPLES}/data/eval/mmlu_mini_test.jsonl
mc_dev: {EXAMPLES}/data/eval/mmlu_mini_dev.jsonl
n_shot: 1
eval_max_samples: 6
eval_max_new_tokens: 4
eval_output_dir: {out}
""",
    )
    code = main(["eval", str(cfg), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    names = [m["name"] for m in report["models"]]
    assert names == ["base", str(lora_dir)]
    assert report["models"][1]["adapter"] == str(lora_dir) and report["models"][1]["model"] == str(
        tiny_model_dir
    )
    assert list(report["tasks"]) == ["generation", "multiple_choice", "perplexity"]  # inferred
    for task, count_key, n in (
        ("generation", "samples", 6),
        ("multiple_choice", "total", 6),
        ("perplexity", "samples", 6),
    ):
        for name, m in zip(names, report["models"], strict=True):
            result = report["tasks"][task]["results"][name]
            assert result[count_key] == n
            lines = (
                (out / m["folder"] / task / "predictions.jsonl")
                .read_text(encoding="utf-8")
                .splitlines()
            )
            assert len(lines) == n
            assert (
                json.loads((out / m["folder"] / task / "scores.json").read_text())[count_key] == n
            )
    ppl = [report["tasks"]["perplexity"]["results"][n]["perplexity"] for n in names]
    assert ppl[0] != ppl[1]  # the adapter is really applied
    assert report["tasks"]["multiple_choice"]["n_shot"] == 1
    assert report["tasks"]["multiple_choice"]["results"]["base"]["one_forward_questions"] == 6
    md = (out / "report.md").read_text(encoding="utf-8")
    assert (
        f"| task | metric | base | {lora_dir} | Δ {lora_dir} |" in md
        and "| perplexity | perplexity ↓ |" in md
    )
    assert md.split("## At a glance")[1].split("## generation")[0].strip() in stdout
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "config.yaml").is_file()


def test_compare_function_for_the_demo(tiny_model_dir, lora_dir, tmp_path):
    from danlu.eval import compare

    lines: list[str] = []
    report = compare({"base+lora": str(lora_dir)}, str(EXAMPLES / "data" / "identity_eval.jsonl"),
                     model=str(tiny_model_dir), output_dir=str(tmp_path / "cmp"), tasks=("perplexity",),
                     settings={"eval_max_samples": 3}, log=lines.append, quiet=True)  # fmt: skip
    assert [m["name"] for m in report["models"]] == ["base", "base+lora"]
    assert "| perplexity | perplexity ↓ |" in lines[-1] and "Δ base+lora" in lines[-1]
    assert (tmp_path / "cmp" / "base+lora" / "perplexity" / "predictions.jsonl").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            [],
            "eval: nothing to evaluate: set eval_data (generation, perplexity) and/or mc_data (multiple_choice)",
        ),
        (
            ["eval_task=multiple_choice"],
            "override 'eval_task=multiple_choice': eval_task=['multiple_choice'], "
            "mc_data=None: multiple_choice needs mc_data",
        ),
        (
            ["eval_task=generation,bleu"],
            "override 'eval_task=generation,bleu': eval_task must list only "
            "generation, multiple_choice, perplexity, preference, retrieval, got ['generation', 'bleu']",
        ),
        (
            ["mc_data=x.jsonl", "n_shot=2"],
            "override 'n_shot=2': n_shot=2, mc_dev=None: n_shot > 0 needs mc_dev "
            "(the file the examples come from)",
        ),
        (["eval_models=[{path: a, name: m}, {path: b, name: m}]"], None),
    ],
)
def test_usage_errors_exit_2(tmp_path, capsys, overrides, message):
    cfg = write_cfg(tmp_path, "model: /nonexistent\n")
    code = main(["eval", str(cfg), *overrides])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    if message:
        assert err == f"danlu: error: {message}\n"
    else:
        assert "eval_models names must be unique" in err


def test_duplicate_default_names_are_refused(tmp_path, capsys):
    cfg = write_cfg(tmp_path, f"model: /nonexistent\nmc_data: {EXAMPLES}/data/eval/mmlu_mini_test.jsonl\n"
                              "eval_models: [a, a]\n")  # fmt: skip
    assert main(["eval", str(cfg)]) == 2
    assert capsys.readouterr().err == (
        "danlu: error: eval_models: two models are named 'a'; give them distinct name: values\n"
    )


def test_example_configs_are_valid():
    from danlu.config import load_config
    from danlu.eval.runner import resolve_tasks

    for name, tasks in (("eval_compare.yaml", ["generation", "multiple_choice", "perplexity"]),
                        ("eval_mmlu.yaml", ["multiple_choice"]), ("eval_ceval.yaml", ["multiple_choice"])):  # fmt: skip
        assert resolve_tasks(load_config(EXAMPLES / name)) == tasks


def test_ceval_folder_two_shot_with_chat_template(tiny_model_dir, tmp_path):
    from danlu.config import load_config
    from danlu.eval import evaluate

    cfg = load_config(
        EXAMPLES / "eval_ceval.yaml",
        [f"model={tiny_model_dir}", "mc_chat_template=true", f"eval_output_dir={tmp_path}"],
    )
    report = evaluate(cfg, log=lambda s: None, quiet=True)
    mc = report["tasks"]["multiple_choice"]
    assert (mc["language"], mc["n_shot"], mc["questions"], mc["subjects"]) == ("zh", 2, 10, 2)
    result = mc["results"][str(tiny_model_dir)]
    assert result["one_forward_questions"] == 10
    assert result["example_prompt"].startswith(
        "以下是中国关于生活常识考试的单项选择题，请选出其中的正确答案。\n\n一天有多少小时？\nA. 12\n"
    )
    assert set(result["subjects"]) == {"everyday_science", "tea_culture"}
