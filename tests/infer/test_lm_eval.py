"""EleutherAI lm-evaluation-harness `local-completions` against a live danlu server, on a small
local multiple-choice task (task YAML + JSON through --include_path; no network).

lm-eval scores each choice by the echoed prompt logprobs our server returns; the test checks
the harness exits 0, reports an accuracy, and that every per-choice log-likelihood it logged
equals one computed in-process with a plain forward pass over the same tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is a dev dependency")
pytest.importorskip(
    "tenacity", reason="lm-eval's API models need the lm-eval[api] extra (tenacity)"
)

QUESTIONS = [
    ("What does a furnace make?", ["金丹", "ice", "music", "rain"], 0),
    ("Once upon a time there was a", ["furnace", "river", "song", "cloud"], 0),
    ("丹炉 is a", ["furnace", "bicycle", "fish", "chair"], 0),
    ("Hello", ["world", "moon", "table", "sand"], 0),
    ("2 + 2 =", ["4", "5", "22", "fish"], 0),
    ("The capital of France is", ["Paris", "Rome", "Berlin", "Madrid"], 0),
]

TASK = """\
task: danlu_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _loglik(model, tokenizer, context: str, continuation: str) -> float:
    """What lm-eval computes: log P(continuation tokens | context tokens)."""
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    ctx = len(tokenizer.encode(context, add_special_tokens=False))
    with torch.inference_mode():
        lp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return sum(lp[i - 1, whole[i]].item() for i in range(ctx, len(whole)))


@pytest.mark.slow  # the harness starts in a subprocess and indexes its task library: ~20 s
def test_lm_eval_local_completions_scores_multiple_choice(server, parrot, parrot_dir, tmp_path):
    data = tmp_path / "mc.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": q, "choices": c, "answer": a}, ensure_ascii=False) + "\n"
            for q, c, a in QUESTIONS
        ),
        encoding="utf-8",
    )
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "danlu_tiny_mc.yaml").write_text(TASK.format(data=data), encoding="utf-8")
    out = tmp_path / "out"
    model_args = ",".join(
        [
            "model=parrot",
            f"base_url={server.base_url}/completions",
            f"tokenizer={parrot_dir}",
            "tokenizer_backend=huggingface",
            "tokenized_requests=True",
            "num_concurrent=1",
            "max_retries=1",
            "timeout=60",
        ]
    )
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf-cache"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "run",
        "--model",
        "local-completions",
        "--model_args",
        model_args,
        "--tasks",
        "danlu_tiny_mc",
        "--include_path",
        str(tasks),
        "--batch_size",
        "4",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "danlu_tiny_mc" in proc.stdout and "acc" in proc.stdout

    results = json.loads(next(out.rglob("results_*.json")).read_text())
    acc = results["results"]["danlu_tiny_mc"]["acc,none"]
    samples = [
        json.loads(line)
        for line in next(out.rglob("samples_danlu_tiny_mc_*.jsonl")).read_text().splitlines()
    ]
    assert len(samples) == len(QUESTIONS)

    tok, model = parrot.tokenizer, parrot.model
    correct = 0
    for s in samples:
        q, choices, gold = QUESTIONS[s["doc_id"]]
        context = f"Question: {q}\nAnswer:"
        expected = [_loglik(model, tok, context, " " + c) for c in choices]
        got = [float(r[0][0]) for r in s["resps"]]
        assert got == pytest.approx(expected, abs=2e-3)
        correct += max(range(len(expected)), key=expected.__getitem__) == gold
    assert acc == pytest.approx(correct / len(QUESTIONS))
    assert 0.0 <= acc <= 1.0


def test_include_path_task_file_is_valid_yaml():
    import yaml

    doc = yaml.safe_load(TASK.format(data=Path("/x.jsonl")))
    assert doc["doc_to_text"] == "Question: {{question}}\nAnswer:"
    assert doc["dataset_kwargs"]["data_files"]["test"] == "/x.jsonl"
