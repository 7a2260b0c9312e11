"""The embedded SmolLM2: one-forward letter scoring is exact, and matches lm-evaluation-harness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from danlu.eval.choice import build_prompt, encode_request, score_requests
from danlu.eval.mc_data import load_questions

from .conftest import EXAMPLES
from .test_choice import brute_force

pytestmark = pytest.mark.slow

MINI = EXAMPLES / "data" / "eval" / "mmlu_mini_test.jsonl"


@pytest.fixture(scope="module")
def smol():
    from danlu.config import ModelArgs
    from danlu.models import load_model

    loaded = load_model(ModelArgs(device="cpu", model_dtype="float32"))
    return loaded.model, loaded.tokenizer


def test_one_forward_scores_equal_brute_force_in_english_and_chinese(smol):
    model, tok = smol
    en = load_questions(str(MINI), "mc_data").questions[:1]
    zh = load_questions(str(EXAMPLES / "data" / "eval" / "ceval" / "val"), "mc_data").questions[:1]
    reqs = [
        encode_request(tok, build_prompt(q, [], lang), lang)
        for qs, lang in ((en, "en"), (zh, "zh"))
        for q in qs
    ]
    assert all(r.one_token for r in reqs)
    for req, scores in zip(
        reqs, score_requests(model, reqs, tok.pad_token_id, batch_size=4), strict=True
    ):
        assert scores == pytest.approx(
            [brute_force(model, req.context, c) for c in req.continuations], abs=1e-4
        )


def test_loglikelihoods_equal_lm_eval_harness(smol, smollm_dir, tmp_path, monkeypatch):
    """Same prompt strings and same per-choice log-likelihoods as lm-eval's hf backend."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "mini.jsonl"
    data.write_text(
        "".join(MINI.read_text(encoding="utf-8").splitlines(keepends=True)[:4]), encoding="utf-8"
    )
    (tmp_path / "mini_task.yaml").write_text(
        f"task: danlu_mini\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'description: "The following are multiple choice questions (with answers) about {{topic}}.\\n\\n"\n'
        'doc_to_text: "{{question.strip()}}\\nA. {{answer_a}}\\nB. {{answer_b}}\\nC. {{answer_c}}\\nD. {{answer_d}}\\nAnswer:"\n'
        'doc_to_choice: ["A", "B", "C", "D"]\n'
        "doc_to_target: \"{{['A', 'B', 'C', 'D'].index(correct_answer)}}\"\n"
        "metric_list:\n  - metric: acc\n",
        encoding="utf-8",
    )
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={smollm_dir},dtype=float32",
                                  tasks=["danlu_mini"], task_manager=TaskManager(include_path=str(tmp_path)),
                                  batch_size=4, device="cpu", log_samples=True)  # fmt: skip
    samples = sorted(res["samples"]["danlu_mini"], key=lambda s: s["doc_id"])
    model, tok = smol
    questions = load_questions(str(data), "mc_data").questions
    prompts = [build_prompt(q, [], "en") for q in questions]
    assert prompts == [s["arguments"][0][0] for s in samples]
    ours = score_requests(
        model, [encode_request(tok, p, "en") for p in prompts], tok.pad_token_id, batch_size=4
    )
    for mine, s in zip(ours, samples, strict=True):
        assert mine == pytest.approx([float(r[0]) for r in s["filtered_resps"]], abs=1e-4)


def test_generation_stops_at_end_of_turn(tmp_path, smol):
    from danlu.config import load_config
    from danlu.eval import evaluate

    _, tok = smol
    data = tmp_path / "short.jsonl"
    data.write_text(
        '{"instruction": "What is the capital of France? Answer with one word.", "output": "Paris"}\n'
        '{"instruction": "What is 2 + 3? Reply with the number only.", "output": "5"}\n',
        encoding="utf-8",
    )
    overrides = [f"eval_data={data}", "eval_task=generation", "eval_max_new_tokens=24",
                 f"eval_output_dir={tmp_path / 'out'}"]  # fmt: skip
    report = evaluate(load_config(None, overrides), log=lambda s: None, quiet=True)
    result = report["tasks"]["generation"]["results"]["smollm2-135m-instruct"]
    rows = [
        json.loads(x) for x in Path(result["predictions"]).read_text(encoding="utf-8").splitlines()
    ]
    assert "Paris" in rows[0]["prediction"] and "5" in rows[1]["prediction"]
    for r in rows:  # it stopped by itself, at <|im_end|>, well before the token limit
        assert len(tok(r["prediction"])["input_ids"]) < 20 and "<|im_end|>" not in r["prediction"]
    assert result["rouge-l"] > 0
