"""Held-out accuracy before and after preference and RL training, SmolLM2-135M on the CPU.

    python bench/pref_accuracy.py [--stages rm dpo kto grpo] [--epochs 1] [--workdir DIR]

rm / dpo / kto: ../shared/data/dpo_en_demo.json + dpo_zh_demo.json (LLaMA-Factory's demo pairs,
sharegpt), every 10th pair held out; the held-out pairs are scored with `danlu eval
eval_task=[preference]` before training (the base: its log-probability comparison; an
untrained reward head for rm) and after (the reward model's scores; the dpo/kto policy's
implicit reward against its base). kto trains on the same train pairs unpaired (chosen ->
good, rejected -> bad).
grpo: examples/data/arith.jsonl (prompt + solution), greedy answers to arith_eval.jsonl scored
by the `accuracy` reward before and after.
Every run is danlu's CLI in its own process; printed: the figures and the wall time of each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
COMMON = ["model=smollm2-135m-instruct", "method=lora", "lora_rank=8", "lora_target=[all-linear]",
          "template=auto", "report_to=none", "save_steps=100000", "logging_steps=5",
          "bf16=false", "seed=42"]  # fmt: skip


CUTOFF = [512]  # set from --cutoff
REUSE = [False]  # set from --reuse


def split_pairs(work: Path, per_language: int | None) -> tuple[Path, Path, Path]:
    """(train pairs, held-out pairs, train answers unpaired for kto), as jsonl; the first
    `per_language` train pairs of each file when set (CPU time)."""
    train, held = [], []
    for name in ("dpo_en_demo.json", "dpo_zh_demo.json"):
        rows = json.loads((SHARED / name).read_text(encoding="utf-8"))
        train += [r for i, r in enumerate(rows) if i % 10 != 9][:per_language]
        held += rows[9::10]
    kto = [{"conversations": [*r["conversations"], r[side]], "kto_tag": side == "chosen"}
           for r in train for side in ("chosen", "rejected")]  # fmt: skip
    paths = work / "pairs_train.jsonl", work / "pairs_held.jsonl", work / "kto_train.jsonl"
    for path, rows in zip(paths, (train, held, kto), strict=True):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return paths


def danlu(*argv: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "danlu", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"danlu {' '.join(argv[:2])} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def preference_accuracy(work: Path, held: Path, name: str, *model: str) -> dict:
    out = work / f"eval-{name}"
    seconds = danlu("eval", *_eval_args(held, out, model))
    report = json.loads((out / "report.json").read_text())
    result = next(iter(report["tasks"]["preference"]["results"].values()))
    return {**result, "seconds": seconds}


def _eval_args(held: Path, out: Path, model: tuple[str, ...]) -> list[str]:
    config = out.parent / f"{out.name}.yaml"
    config.write_text("eval_task: [preference]\n")
    return [str(config), "model=smollm2-135m-instruct", f"eval_data=[{held}]", f"cutoff_len={CUTOFF[0]}",
            f"eval_output_dir={out}", "bf16=false", *model]  # fmt: skip


def train(
    work: Path, stage: str, data: Path, epochs: float, *extra: str, name: str = ""
) -> tuple[Path, float]:
    out = work / f"run-{name or stage}"
    if REUSE[0] and (out / "final").is_dir():  # --reuse: a finished run of an earlier call
        return out / "final", float("nan")
    config = work / f"{stage}.yaml"
    config.write_text(f"stage: {stage}\n")
    seconds = danlu("train", str(config), *COMMON, f"stage={stage}", f"data=[{data}]",
                    f"output_dir={out}", f"num_train_epochs={epochs}", "overwrite_output_dir=true",
                    "--quiet", *extra)  # fmt: skip
    return out / "final", seconds


def show(stage: str, before: dict, after: dict, seconds: float) -> None:
    """Before: the rm's untrained head, or the base's log-prob comparison (a base has no
    implicit reward); after: the rm's scores, or the policy's implicit reward (and its raw
    log-prob comparison, for the like-for-like number)."""
    held = after.get("pairs", after.get("n", "?"))
    if stage in ("rm", "grpo"):
        print(f"{stage:<6} held-out accuracy: before {before['accuracy']:.1f}%  after "
              f"{after['accuracy']:.1f}%  ({held} held out; training {seconds:.0f} s)")  # fmt: skip
        return
    print(f"{stage:<6} held-out: implicit-reward accuracy {after['accuracy']:.1f}% (margin "
          f"{after['margin']:.3f}); log-prob accuracy before {before['logp_accuracy']:.1f}% "
          f"after {after['logp_accuracy']:.1f}%  ({held} held out; training {seconds:.0f} s)")  # fmt: skip


def pairs_stages(args: argparse.Namespace, work: Path) -> None:
    train_pairs, held, kto = split_pairs(work, args.train_per_language)
    print(
        f"pairs: {sum(1 for _ in train_pairs.open())} train, {sum(1 for _ in held.open())} held out"
    )
    base = preference_accuracy(work, held, "base")
    print(f"base   held-out: log-prob accuracy {base['logp_accuracy']:.1f}%, "
          f"length-averaged {base.get('avg_logp_accuracy', float('nan')):.1f}%")  # fmt: skip
    hyper = [f"cutoff_len={args.cutoff}", "per_device_train_batch_size=4", "gradient_accumulation_steps=2",
             "learning_rate=1e-4", "lr_scheduler_type=cosine", "warmup_ratio=0.1"]  # fmt: skip
    for stage in args.stages:
        if stage == "grpo":
            continue
        data = kto if stage == "kto" else train_pairs
        final, seconds = train(work, stage, data, args.epochs, *hyper)
        before = base
        if stage == "rm":  # an untrained score head, the rm's own starting point
            before = preference_accuracy(work, held, "rm-init", f"adapter={_init_rm(work)}")
        after = preference_accuracy(work, held, stage, f"adapter={final}")
        show(stage, before, after, seconds)


def _init_rm(work: Path) -> Path:
    """A reward model as it starts: its random head (one step at lr 1e-12, which rules allow)."""
    final, _ = train(work, "rm", work / "pairs_train.jsonl", 1, "max_steps=1",
                     "learning_rate=1e-12", f"cutoff_len={CUTOFF[0]}",
                     "per_device_train_batch_size=1", name="rm-init")  # fmt: skip
    return final


def arith_accuracy(adapter: Path | None) -> dict:
    from danlu.config.sections import ModelArgs
    from danlu.infer.engine import Engine
    from danlu.infer.params import GenParams
    from danlu.train.rewards import accuracy

    rows = [
        json.loads(x) for x in (ROOT / "examples/data/arith_eval.jsonl").read_text().splitlines()
    ]
    args = ModelArgs(model="smollm2-135m-instruct", adapter=str(adapter) if adapter else None)
    with Engine.load(args) as engine:
        params = GenParams(max_new_tokens=48, temperature=0)
        texts = [engine.chat([{"role": "user", "content": r["prompt"]}], params).text for r in rows]
    scores = accuracy([r["prompt"] for r in rows], texts, solution=[r["solution"] for r in rows])
    return {"accuracy": 100 * sum(scores) / len(scores), "n": len(rows)}


def grpo_stage(args: argparse.Namespace, work: Path) -> None:
    before = arith_accuracy(None)
    final, seconds = train(work, "grpo", ROOT / "examples/data/arith.jsonl", 1,
                           "cutoff_len=128", "num_generations=4", "max_completion_length=48",
                           "reward_funcs=[accuracy]", "pref_beta=0.04", "learning_rate=2e-5",
                           "per_device_train_batch_size=4", "lora_rank=16",
                           f"max_steps={args.grpo_steps}")  # fmt: skip
    after = arith_accuracy(final)
    show("grpo", before, after, seconds)
    rows = [json.loads(x) for x in (final.parent / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in rows if "reward" in r]
    print(f"grpo   training reward (accuracy of sampled answers): first window {rewards[0]:.3f}, "
          f"last window {rewards[-1]:.3f}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--stages", nargs="*", default=["rm", "dpo", "kto", "grpo"])
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--cutoff", type=int, default=512)
    p.add_argument("--reuse", action="store_true", help="keep finished runs of an earlier call")
    p.add_argument(
        "--train-per-language",
        type=int,
        default=None,
        help="train on the first N train pairs of each language (default: all 270)",
    )
    p.add_argument("--grpo-steps", type=int, default=60)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/danlu-bench-pref-accuracy"))
    args = p.parse_args()
    CUTOFF[0], REUSE[0] = args.cutoff, args.reuse
    args.workdir.mkdir(parents=True, exist_ok=True)
    if any(s != "grpo" for s in args.stages):
        pairs_stages(args, args.workdir)
    if "grpo" in args.stages:
        grpo_stage(args, args.workdir)


if __name__ == "__main__":
    main()
