"""DPO throughput: danlu vs a plain TRL DPOTrainer + PEFT script vs LLaMA-Factory, one run.

    python bench/pref_throughput.py [--steps 15] [--batch 4] [--cutoff 512] [--peers trl llamafactory]
    (measured here with --steps 8 --batch 2 --cutoff 256: a step of 4 x 512 tokens takes a
    minute on a 2-core CPU)

Same model (the embedded SmolLM2-135M-Instruct, as its converted HF folder), same pairs
(the first steps x batch of ../shared/data/dpo_en_demo.json, else
examples/data/tea_pairs.jsonl: every side trains each of them once), same LoRA (r=8,
alpha=16, every linear layer), beta 0.1, sigmoid loss, learning rate, batch, cutoff and
number of optimiser steps, fp32 on the CPU. Each side runs in its own process (peak RSS is its
own); printed per side: pairs/s over the training loop (the side's own train_runtime), peak
RSS, and the loss at step 1, which must be ln 2 = 0.6931 for all three (the policy starts as its
own reference): a check that the three compute the same objective. Trained tokens/s is pairs/s
times the pairs' mean answer tokens (both sides, danlu's tokenisation at this cutoff). danlu runs
twice: as configured by default, and with gradient_checkpointing as both peers default to (TRL
1.x DPOConfig, LLaMA-Factory), the like-for-like memory comparison. TRL 1.x also defaults to
bf16, which this script turns off (fp32 everywhere; bf16 on a CPU without bf16 instructions is
emulated, ~100x slower).

Peers live in their own venvs, never danlu's:
  python3 -m venv bench/.venv-trl && bench/.venv-trl/bin/pip install torch==2.13.0 \\
      && bench/.venv-trl/bin/pip install -c <(echo torch==2.13.0) trl==1.16.0 peft
  python3 -m venv bench/.venv-llamafactory && bench/.venv-llamafactory/bin/pip install \
      torch==2.13.0 && bench/.venv-llamafactory/bin/pip install -c <(echo torch==2.13.0) \
      llamafactory==0.9.5   # then remove torchvision and move torchaudio's lib/*.so aside:
                            # PyPI has only CUDA builds of them, which cannot load on CPU torch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "dpo_en_demo.json"
LORA = {"r": 8, "alpha": 16}
TRL_VENV = ROOT / "bench" / ".venv-trl"
LF_VENV = ROOT / "bench" / ".venv-llamafactory"


def pairs_file() -> Path:
    return SHARED if SHARED.is_file() else ROOT / "examples" / "data" / "tea_pairs.jsonl"


def bench_pairs(args: argparse.Namespace) -> Path:
    """The first steps x batch pairs of the source, in its own format: every side trains on
    exactly these, once (each side orders its batches its own way; a longer file would let the
    sides train different pairs, of different lengths, in the same number of steps)."""
    source = pairs_file()
    text = source.read_text(encoding="utf-8")
    n = args.steps * args.batch
    dest = args.workdir / f"pairs-{n}{source.suffix}"
    if text.lstrip().startswith("["):
        dest.write_text(json.dumps(json.loads(text)[:n], ensure_ascii=False), encoding="utf-8")
    else:
        lines = [x for x in text.splitlines() if x.strip()][:n]
        dest.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return dest


def read_pairs(path: Path) -> list[dict]:
    """Pairs as TRL's conversational records: prompt messages, chosen/rejected answers."""
    text = path.read_text(encoding="utf-8")
    rows = (
        json.loads(text)
        if text.lstrip().startswith("[")
        else [json.loads(x) for x in text.splitlines() if x.strip()]
    )
    out = []
    for r in rows:
        if "conversations" in r:  # sharegpt, the LLaMA-Factory demo files
            role = {"human": "user", "gpt": "assistant", "system": "system"}
            prompt = [{"role": role[t["from"]], "content": t["value"]} for t in r["conversations"]]
            chosen, rejected = r["chosen"]["value"], r["rejected"]["value"]
        else:
            prompt = [{"role": "user", "content": r["instruction"]}]
            chosen, rejected = r["chosen"], r["rejected"]
        out.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}]})  # fmt: skip
    return out


# --- sides ---------------------------------------------------------------------------------------


DANLU_SCRIPT = r"""
import json, sys
from danlu.config import load_config
from danlu.train.engine import train
cfg = load_config(None, sys.argv[1:])
result = train(cfg, log=lambda _: None)
rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
losses = [r["loss"] for r in rows if "loss" in r]
print("RESULT " + json.dumps({"runtime_s": result.runtime_s, "first_loss": losses[0],
      "last_loss": losses[-1]}))
"""


def danlu_side(args: argparse.Namespace, *extra: str) -> dict | None:
    overrides = [
        "model=smollm2-135m-instruct", f"data=[{args.pairs}]", "stage=dpo", "method=lora",
        f"lora_rank={LORA['r']}", f"lora_alpha={LORA['alpha']}", "lora_target=[all-linear]",
        "pref_beta=0.1", "pref_loss=sigmoid", f"per_device_train_batch_size={args.batch}",
        f"cutoff_len={args.cutoff}", f"max_steps={args.steps}", f"learning_rate={args.lr}",
        "logging_steps=1", "save_steps=100000", "report_to=none", "overwrite_output_dir=true",
        f"output_dir={args.workdir / 'danlu'}", f"seed={args.seed}", "data_cache=false",
    ]  # fmt: skip
    return _measured("danlu", [sys.executable, "-c", DANLU_SCRIPT, *overrides, *extra])


TRL_SCRIPT = r"""
import json, sys, time, resource
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer

model_dir, data, out, steps, batch, cutoff, lr, seed, r, alpha = sys.argv[1:]
torch.manual_seed(int(seed))
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
rows = json.loads(open(data).read())
losses = []
class Log(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            losses.append(logs["loss"])
cfg = DPOConfig(output_dir=out, per_device_train_batch_size=int(batch), max_steps=int(steps),
                learning_rate=float(lr), beta=0.1, loss_type=["sigmoid"], max_length=int(cutoff),
                logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=int(seed),
                lr_scheduler_type="cosine", dataset_num_proc=1,
                bf16=False)  # TRL 1.x turns bf16 on by default: fp32 like the other sides
peft = LoraConfig(r=int(r), lora_alpha=int(alpha), target_modules="all-linear", task_type="CAUSAL_LM")
trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows),
                     processing_class=tok, peft_config=peft, callbacks=[Log()])
result = trainer.train()
print("RESULT " + json.dumps({"runtime_s": result.metrics["train_runtime"], "first_loss": losses[0],
      "last_loss": losses[-1]}))
"""


def trl_side(args: argparse.Namespace) -> dict | None:
    python = TRL_VENV / "bin" / "python"
    if not python.exists():
        print(
            f"peer trl: {python} not found (see this script's docstring to install it)",
            file=sys.stderr,
        )
        return None
    from danlu.models import resolve_model

    data = args.workdir / "trl-pairs.json"
    data.write_text(json.dumps(read_pairs(args.pairs)))
    argv = [str(python), "-c", TRL_SCRIPT, str(resolve_model("smollm2-135m-instruct")), str(data),
            str(args.workdir / "trl"), str(args.steps), str(args.batch), str(args.cutoff),
            str(args.lr), str(args.seed), str(LORA["r"]), str(LORA["alpha"])]  # fmt: skip
    return _measured("trl", argv)


def llamafactory_side(args: argparse.Namespace) -> dict | None:
    cli = LF_VENV / "bin" / "llamafactory-cli"
    if not cli.exists():
        print(
            f"peer llamafactory: {cli} not found (see bench/train_throughput.py)", file=sys.stderr
        )
        return None
    from danlu.models import resolve_model

    folder = args.workdir / "lf-data"
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "pairs.json"
    data.write_text(json.dumps(_sharegpt(read_pairs(args.pairs))))
    info = {"pairs": {"file_name": str(data), "formatting": "sharegpt", "ranking": True,
                      "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}}  # fmt: skip
    (folder / "dataset_info.json").write_text(json.dumps(info))
    out = args.workdir / "llamafactory"
    lines = [
        f"model_name_or_path: {resolve_model('smollm2-135m-instruct')}", "stage: dpo",
        "do_train: true", "finetuning_type: lora", f"lora_rank: {LORA['r']}",
        f"lora_alpha: {LORA['alpha']}", "lora_target: all", "pref_beta: 0.1",
        "pref_loss: sigmoid", "dataset: pairs", f"dataset_dir: {folder}", "template: smollm2",
        f"cutoff_len: {args.cutoff}", "overwrite_cache: true", f"output_dir: {out}",
        "overwrite_output_dir: true", "logging_steps: 1", "save_strategy: 'no'",
        f"per_device_train_batch_size: {args.batch}", f"learning_rate: {args.lr}",
        f"max_steps: {args.steps}", "lr_scheduler_type: cosine", "report_to: none",
        "use_cpu: true", f"seed: {args.seed}",
    ]  # fmt: skip
    cfg = args.workdir / "llamafactory-dpo.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    measured = _measured("llamafactory", [str(cli), "train", str(cfg)], result_line=False)
    if measured is None:
        return None
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [x["loss"] for x in history if "loss" in x]
    runtime = [x["train_runtime"] for x in history if "train_runtime" in x][-1]  # the final one
    return {**measured, "runtime_s": runtime, "first_loss": losses[0], "last_loss": losses[-1]}


def _sharegpt(pairs: list[dict]) -> list[dict]:
    role = {"user": "human", "assistant": "gpt", "system": "system"}
    return [{"conversations": [{"from": role[m["role"]], "value": m["content"]} for m in p["prompt"]],
             "chosen": {"from": "gpt", "value": p["chosen"][0]["content"]},
             "rejected": {"from": "gpt", "value": p["rejected"][0]["content"]}} for p in pairs]  # fmt: skip


# A fresh process per side runs it and reports the peak RSS of its children (the side alone).
WRAP = (
    "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
    "print('RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)"
)


def _measured(name: str, argv: list[str], result_line: bool = True) -> dict | None:
    """Run one side; its RESULT dict (or {}) plus its peak RSS; None (said why) if it failed."""
    proc = subprocess.run([sys.executable, "-c", WRAP, *argv], capture_output=True, text=True,
                          env={**os.environ})  # fmt: skip
    lines = proc.stdout.splitlines()
    found = [x for x in lines if x.startswith("RESULT ")]
    if proc.returncode != 0 or (result_line and not found):
        print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    rss = int(next(x for x in lines if x.startswith("RSS_KIB")).split()[1]) / 2**20
    return {**(json.loads(found[-1][len("RESULT ") :]) if found else {}), "peak_rss_gib": rss}


# --- driver ----------------------------------------------------------------------------------------


def trained_per_pair(args: argparse.Namespace) -> float:
    """Mean trained (answer) tokens of a pair, both sides, at this cutoff, as danlu tokenises
    them: the same for every side, which all train the same answers."""
    from danlu.config import load_config
    from danlu.data import build_dataset
    from danlu.models import load_tokenizer, resolve_model

    cfg = load_config(None, [f"data=[{args.pairs}]", "stage=dpo", f"cutoff_len={args.cutoff}",
                             "data_cache=false"])  # fmt: skip
    ds, _, _ = build_dataset(cfg, load_tokenizer(resolve_model("smollm2-135m-instruct")),
                             log=lambda _: None)  # fmt: skip
    total = sum(sum(t != -100 for t in row[side][1:]) for row in ds
                for side in ("chosen_labels", "rejected_labels"))  # fmt: skip
    return total / len(ds)


def show(name: str, r: dict, args: argparse.Namespace, per_pair: float) -> None:
    pairs_s = args.steps * args.batch / r["runtime_s"]
    print(f"{name:<14} {pairs_s:>8.2f} {pairs_s * per_pair:>10.0f} {r['runtime_s']:>9.1f} "
          f"{r['peak_rss_gib']:>9.2f} {r['first_loss']:>11.4f} {r['last_loss']:>10.4f}")  # fmt: skip
    r["pairs_per_s"] = pairs_s


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--cutoff", type=int, default=512)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/danlu-bench-pref"))
    p.add_argument(
        "--peers", nargs="*", default=["trl", "llamafactory"], choices=["trl", "llamafactory"]
    )
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.pairs = bench_pairs(args)
    print(f"pairs: the first {args.steps * args.batch} of {pairs_file()}; {args.steps} steps x "
          f"batch {args.batch}, cutoff {args.cutoff}, LoRA r={LORA['r']} all-linear, sigmoid "
          f"beta 0.1, fp32; {os.cpu_count()} cpus")  # fmt: skip
    per_pair = trained_per_pair(args)
    print(f"trained tokens per pair (both answers, danlu's tokenisation): {per_pair:.1f}")
    print(f"{'side':<14} {'pairs/s':>8} {'trained/s':>10} {'time s':>9} {'peak GiB':>9} "
          f"{'loss step1':>11} {'last loss':>10}")  # fmt: skip
    danlu = danlu_side(args)
    if danlu is None:
        raise SystemExit(1)
    results = {"danlu": danlu}
    show("danlu", danlu, args, per_pair)
    # Both peers checkpoint activations by default (TRL 1.x DPOConfig, LLaMA-Factory): danlu
    # with the same setting is the like-for-like memory comparison.
    gc = danlu_side(args, "gradient_checkpointing=true")
    if gc is not None:
        results["danlu+gc"] = gc
        show("danlu+gc", gc, args, per_pair)
    sides = {"trl": trl_side, "llamafactory": llamafactory_side}
    for name in args.peers:
        if (r := sides[name](args)) is not None:
            results[name] = r
            show(name, r, args, per_pair)
    for name in args.peers:
        for ours in ("danlu", "danlu+gc"):
            if name in results and ours in results:
                r, theirs = results[ours], results[name]
                print(f"ratio {ours} / {name}: pairs/s {r['pairs_per_s'] / theirs['pairs_per_s']:.2f}x,"
                      f" peak RSS {r['peak_rss_gib'] / theirs['peak_rss_gib']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
