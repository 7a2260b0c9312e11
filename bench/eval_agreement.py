"""danlu's multiple-choice accuracy vs EleutherAI lm-evaluation-harness, question by question.

    .venv/bin/python bench/eval_agreement.py [--n 200] [--batch-size 8] [--repeats 1]
                                              [--mmlu ../shared/data/mmlu_test.jsonl]

Takes a fixed, spread-out subset of the MMLU file (every (N/n)-th question after dropping the
repeated header rows, so every part of the file and most subjects are in it), 0-shot, on the
embedded SmolLM2-135M-Instruct (float32, CPU unless CUDA is visible). Then, each in a fresh
subprocess (alternating, `--repeats` times; the fastest wall time and the smallest CPU time of
each count):

  danlu    `danlu.eval.evaluate` with eval_task=multiple_choice on the subset: the whole command
           path (config, reading, model load, scoring, report.json/md/png);
  lm-eval  `lm_eval.simple_evaluate(model="hf", ...)` on a local task YAML written here
           (--include_path, dataset_path json, offline) whose prompt is lm-eval's own `mmlu`
           template with the subject from the record's `topic`; same model folder, dtype and
           batch size.

Prints both accuracies, whether every prompt string is identical, the number of questions on
which the predictions differ (each explained by the two log-likelihood margins), the largest
log-likelihood difference, and the time ratios lm-eval / danlu: wall time of model load +
evaluation (and including Python imports), and process CPU time, which a busy shared machine
disturbs less than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LETTERS = "ABCD"
TASK = "danlu_mmlu_agreement"
ROOT = Path(__file__).resolve().parents[1]

TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {{{{topic}}}}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{answer_a}}}}\\nB. {{{{answer_b}}}}\\nC. {{{{answer_c}}}}\\nD. {{{{answer_d}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: "{{{{['A', 'B', 'C', 'D'].index(correct_answer)}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def make_subset(mmlu: Path, n: int, folder: Path) -> Path:
    rows = [
        json.loads(line) for line in mmlu.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    rows = [r for r in rows if r.get("correct_answer") in tuple(LETTERS)]  # drop the header rows
    picked = [rows[i * len(rows) // n] for i in range(n)]
    path = folder / "mmlu_subset.jsonl"
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked), encoding="utf-8"
    )
    (folder / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=path), encoding="utf-8")
    return path


def worker_danlu(subset: Path, batch: int, out: Path) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    from danlu.config import load_config
    from danlu.eval import evaluate

    t1, c1 = time.perf_counter(), time.process_time()
    cfg = load_config(None, [f"mc_data={subset}", "eval_task=multiple_choice", "model_dtype=float32",
                             f"per_device_eval_batch_size={batch}", f"eval_output_dir={out}"])  # fmt: skip
    report = evaluate(cfg, log=lambda s: None, quiet=True)
    t2, c2 = time.perf_counter(), time.process_time()
    name = report["models"][0]["name"]
    pred_file = out / report["models"][0]["folder"] / "multiple_choice" / "predictions.jsonl"
    rows = [json.loads(line) for line in pred_file.read_text(encoding="utf-8").splitlines()]
    return {"accuracy": report["tasks"]["multiple_choice"]["results"][name]["accuracy_micro"],
            "logprobs": [[r["logprobs"][x] for x in LETTERS] for r in rows],
            "predictions": [r["prediction"] for r in rows],
            "one_forward": report["tasks"]["multiple_choice"]["results"][name]["one_forward_questions"],
            "eval_s": t2 - t1, "total_s": t2 - t0, "cpu_s": c2 - c1, "cpu_total_s": c2 - c0}  # fmt: skip


def worker_lmeval(subset: Path, batch: int, out: Path) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    import lm_eval
    from lm_eval.tasks import TaskManager

    from danlu.models import resolve_model

    t1, c1 = time.perf_counter(), time.process_time()
    path = resolve_model("smollm2-135m-instruct")
    device = "cuda" if _cuda() else "cpu"
    res = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={path},dtype=float32", tasks=[TASK],
        task_manager=TaskManager(include_path=str(subset.parent)), batch_size=batch, device=device,
        num_fewshot=0, log_samples=True,
    )  # fmt: skip
    t2, c2 = time.perf_counter(), time.process_time()
    samples = sorted(res["samples"][TASK], key=lambda s: s["doc_id"])
    logprobs = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    return {"accuracy": 100 * res["results"][TASK]["acc,none"],
            "logprobs": logprobs,
            "predictions": [LETTERS[max(range(4), key=lambda i, lp=lp: (lp[i], -i))] for lp in logprobs],
            "prompts": [s["arguments"][0][0] for s in samples],
            "eval_s": t2 - t1, "total_s": t2 - t0, "cpu_s": c2 - c1, "cpu_total_s": c2 - c0}  # fmt: skip


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_worker(kind: str, subset: Path, batch: int, folder: Path) -> dict:
    out = folder / f"{kind}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    cmd = [sys.executable, __file__, "--worker", kind, "--subset", str(subset),
           "--batch-size", str(batch), "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text(encoding="utf-8"))


def danlu_prompts(subset: Path) -> list[str]:
    from danlu.eval.choice import build_prompt
    from danlu.eval.mc_data import load_questions

    return [build_prompt(q, [], "en") for q in load_questions(str(subset), "mc_data").questions]


def margin(lp: list[float]) -> float:
    top = sorted(lp, reverse=True)
    return top[0] - top[1]


def report(d: dict, h: dict, prompts: list[str], subset: Path) -> None:
    topics = [json.loads(line)["topic"] for line in subset.read_text(encoding="utf-8").splitlines()]
    same_prompts = sum(a == b for a, b in zip(prompts, h["prompts"], strict=True))
    diffs = [
        abs(a - b)
        for x, y in zip(d["logprobs"], h["logprobs"], strict=True)
        for a, b in zip(x, y, strict=True)
    ]
    disagree = [
        i for i, (a, b) in enumerate(zip(d["predictions"], h["predictions"], strict=True)) if a != b
    ]
    n = len(prompts)
    print(
        f"questions: {n} (0-shot, {len(set(topics))} subjects); danlu one-forward questions: {d['one_forward']}"
    )
    print(f"prompts identical: {same_prompts}/{n}")
    print(f"accuracy: danlu {d['accuracy']:.2f}%  lm-eval {h['accuracy']:.2f}%")
    print(
        f"disagreements: {len(disagree)}; max |log-likelihood difference| {max(diffs):.2e}, mean {sum(diffs) / len(diffs):.2e}"
    )
    for i in disagree:
        print(f"  #{i} {topics[i]}: danlu {d['predictions'][i]} (margin {margin(d['logprobs'][i]):.2e}), "
              f"lm-eval {h['predictions'][i]} (margin {margin(h['logprobs'][i]):.2e}): a near-tie within float noise"
              if max(margin(d["logprobs"][i]), margin(h["logprobs"][i])) < 10 * max(diffs) else
              f"  #{i} {topics[i]}: danlu {d['predictions'][i]}, lm-eval {h['predictions'][i]}: NOT a near-tie")  # fmt: skip
    print(
        f"time, model load + evaluation: danlu {d['eval_s']:.1f}s  lm-eval {h['eval_s']:.1f}s  "
        f"ratio lm-eval/danlu {h['eval_s'] / d['eval_s']:.2f}x"
    )
    print(
        f"time, including imports:       danlu {d['total_s']:.1f}s  lm-eval {h['total_s']:.1f}s  "
        f"ratio lm-eval/danlu {h['total_s'] / d['total_s']:.2f}x"
    )
    print(
        f"CPU time, model load + evaluation: danlu {d['cpu_s']:.1f}s  lm-eval {h['cpu_s']:.1f}s  "
        f"ratio lm-eval/danlu {h['cpu_s'] / d['cpu_s']:.2f}x"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--mmlu", type=Path, default=ROOT.parent / "shared" / "data" / "mmlu_test.jsonl")
    p.add_argument("--worker", choices=["danlu", "lmeval"], help=argparse.SUPPRESS)
    p.add_argument("--subset", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        fn = worker_danlu if args.worker == "danlu" else worker_lmeval
        result = fn(args.subset, args.batch_size, args.subset.parent / f"{args.worker}-out")
        args.out.write_text(json.dumps(result), encoding="utf-8")
        return 0
    if not args.mmlu.is_file():
        print(f"needs the MMLU file {args.mmlu} (../shared/data/mmlu_test.jsonl)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="danlu-eval-agreement-") as tmp:
        folder = Path(tmp)
        subset = make_subset(args.mmlu, args.n, folder)
        runs: dict[str, list[dict]] = {"danlu": [], "lmeval": []}
        for r in range(args.repeats):
            for kind in ("lmeval", "danlu") if r % 2 == 0 else ("danlu", "lmeval"):
                runs[kind].append(run_worker(kind, subset, args.batch_size, folder))
                last = runs[kind][-1]
                print(
                    f"run {r + 1} {kind}: {last['eval_s']:.1f}s wall, {last['cpu_s']:.1f}s CPU",
                    file=sys.stderr,
                )
        best = {k: min(v, key=lambda x: x["eval_s"]) for k, v in runs.items()}
        for k, v in runs.items():  # the least disturbed CPU time, independently of the wall time
            best[k] = {**best[k], "cpu_s": min(x["cpu_s"] for x in v)}
        report(best["danlu"], best["lmeval"], danlu_prompts(subset), subset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
