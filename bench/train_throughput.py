"""LoRA SFT throughput: a plain transformers Trainer + peft script vs danlu, same model and data.

    python bench/train_throughput.py [--steps 30] [--batch 4] [--cutoff 512] [--peer llamafactory]

Model: the embedded SmolLM2-135M-Instruct. Data: ../shared/data/alpaca_zh_demo.json when present,
else the bundled examples/data (identity + tea). Each configuration runs in its own process (so
peak RSS is its own) for the same number of optimiser steps with the same LoRA (r=8, alpha=16,
all-linear), learning rate, batch size and cutoff, and prints trained tokens/s (tokens with a
label, the work that teaches the model), all tokens/s, peak RSS and final loss:

  baseline        what a practitioner writes first: apply_chat_template, prompt masked to -100,
                  DataCollatorForSeq2Seq padding to the longest in the batch, fp32, Trainer.
  baseline-bf16   the same with bf16=True (CPU autocast), to separate precision from the rest.
  danlu-plain     danlu with the baseline's settings (no packing, fp32): the engine's own cost.
  danlu           danlu's best CPU settings: packing (no padding, no cross-sample attention),
                  bf16 autocast.

The ratio danlu / baseline is printed at the end. MFU is against the measured bf16 (or fp32)
matmul peak of this CPU, the same one danlu's logs use.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "alpaca_zh_demo.json"
LORA = {"r": 8, "alpha": 16}


def data_files() -> list[tuple[str, str]]:
    if SHARED_DATA.is_file():
        return [(str(SHARED_DATA), "alpaca")]
    return [
        (str(ROOT / "examples/data/identity.jsonl"), "alpaca"),
        (str(ROOT / "examples/data/tea.jsonl"), "messages"),
    ]


# --- (a) the plain Trainer + peft script -----------------------------------------------------


def read_records(path: str, fmt: str) -> list[list[dict[str, str]]]:
    """Records as chat messages (alpaca: instruction + input -> output)."""
    text = Path(path).read_text(encoding="utf-8")
    rows = (
        json.loads(text)
        if text.lstrip().startswith("[")
        else [json.loads(x) for x in text.splitlines() if x.strip()]
    )
    if fmt == "messages":
        return [r["messages"] for r in rows]
    return [
        [
            {"role": "user", "content": (r["instruction"] + "\n" + r.get("input", "")).strip()},
            {"role": "assistant", "content": r["output"]},
        ]
        for r in rows
    ]


def baseline(args: argparse.Namespace, bf16: bool) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from danlu.models import resolve_model

    path = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    rows = []
    for f, fmt in data_files():
        for msgs in read_records(f, fmt):
            prompt = tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=False)
            full = tok.apply_chat_template(msgs, tokenize=False)
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            ids = tok(full, add_special_tokens=False)["input_ids"][: args.cutoff]
            rows.append(
                {
                    "input_ids": ids,
                    "attention_mask": [1] * len(ids),
                    "labels": ([-100] * len(p_ids) + ids[len(p_ids) :])[: len(ids)],
                }
            )
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    counted = {"trained": 0, "tokens": 0}
    collator = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)

    def collate(features: list[dict]) -> dict:
        batch = collator(features)
        counted["trained"] += int((batch["labels"][:, 1:] != -100).sum())
        counted["tokens"] += int(batch["attention_mask"].sum())
        return batch

    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    targs = TrainingArguments(
        output_dir=str(args.workdir / "baseline"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=args.lr,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=bf16,
        seed=args.seed,
        remove_unused_columns=False,
        disable_tqdm=True,
        lr_scheduler_type="cosine",
    )
    trainer = Trainer(
        model=model, args=targs, train_dataset=rows, data_collator=collate, callbacks=[Losses()]
    )
    out = trainer.train()
    runtime = out.metrics["train_runtime"]
    return {
        "trained_tokens": counted["trained"],
        "tokens": counted["tokens"],
        "runtime_s": runtime,
        "final_loss": losses[-1] if losses else None,
    }


# --- (b) danlu ---------------------------------------------------------------------------------


def danlu_run(args: argparse.Namespace, best: bool) -> dict:
    from danlu.config import load_config
    from danlu.train.engine import train

    files = data_files()
    data = "[" + ", ".join(f"{{path: '{p}', format: {f}}}" for p, f in files) + "]"
    name = "danlu" if best else "danlu-plain"
    cfg = load_config(
        None,
        [
            "model=smollm2-135m-instruct",
            f"data={data}",
            f"output_dir={args.workdir / name}",
            "overwrite_output_dir=true",
            "method=lora",
            f"lora_rank={LORA['r']}",
            f"lora_alpha={LORA['alpha']}",
            f"learning_rate={args.lr}",
            f"max_steps={args.steps}",
            f"per_device_train_batch_size={args.batch}",
            f"cutoff_len={args.cutoff}",
            f"save_steps={args.steps}",
            "logging_steps=5",
            "report_to=none",
            f"seed={args.seed}",
            f"packing={str(best).lower()}",
            f"bf16={str(best).lower()}",
            *(args.danlu_set if best else []),
        ],
    )
    result = train(cfg, log=lambda _: None)
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "loss" in r]
    return {
        "trained_tokens": result.trained_tokens,
        "tokens": result.tokens,
        "runtime_s": result.runtime_s,
        "final_loss": train_lines[-1]["loss"],
        "mfu_last": train_lines[-1].get("mfu"),
    }


# --- (c) LLaMA-Factory, optional, in its own venv ----------------------------------------------


def llamafactory(args: argparse.Namespace) -> dict | None:
    venv = ROOT / "bench" / ".venv-llamafactory"
    cli = venv / "bin" / "llamafactory-cli"
    if not cli.exists():
        print(
            f"peer llamafactory: {cli} not found. Install it apart from danlu:\n"
            f"  python -m venv {venv} && {venv}/bin/pip install torch==2.13.0 llamafactory==0.9.5\n"
            f"  {venv}/bin/pip uninstall -y torchvision   # PyPI's build fails beside torch 2.13 CPU\n"
            f"  and an empty `torchaudio` package in its site-packages: LLaMA-Factory imports it at\n"
            f"  load time for audio, and no torchaudio wheel matches torch 2.13 (text SFT never uses it)",
            file=sys.stderr,
        )
        return None
    from danlu.models import resolve_model

    dataset_dir = args.workdir / "lf-data"
    dataset_dir.mkdir(parents=True, exist_ok=True)
    info = {}
    for i, (path, fmt) in enumerate(data_files()):
        name = f"d{i}"
        info[name] = (
            {"file_name": path}
            if fmt == "alpaca"
            else {
                "file_name": path,
                "formatting": "sharegpt",
                "columns": {"messages": "messages"},
                "tags": {
                    "role_tag": "role",
                    "content_tag": "content",
                    "user_tag": "user",
                    "assistant_tag": "assistant",
                    "system_tag": "system",
                },
            }
        )
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info))
    out = args.workdir / "llamafactory"
    yaml_text = "\n".join(
        [
            f"model_name_or_path: {resolve_model('smollm2-135m-instruct')}",
            "stage: sft",
            "do_train: true",
            "finetuning_type: lora",
            f"lora_rank: {LORA['r']}",
            f"lora_alpha: {LORA['alpha']}",
            "lora_target: all",
            f"dataset: {','.join(info)}",
            f"dataset_dir: {dataset_dir}",
            "template: smollm2",
            f"cutoff_len: {args.cutoff}",
            "overwrite_cache: true",
            f"output_dir: {out}",
            "overwrite_output_dir: true",
            "logging_steps: 5",
            "save_strategy: 'no'",
            f"per_device_train_batch_size: {args.batch}",
            f"learning_rate: {args.lr}",
            f"max_steps: {args.steps}",
            "lr_scheduler_type: cosine",
            "bf16: true",
            "report_to: none",
            "include_num_input_tokens_seen: non_padding",
            "use_cpu: true",
        ]
    )
    cfg = args.workdir / "llamafactory.yaml"
    cfg.write_text(yaml_text)
    start = time.perf_counter()
    proc = subprocess.run([str(cli), "train", str(cfg)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"peer llamafactory failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    state = json.loads((out / "trainer_state.json").read_text())
    logs = [x for x in state["log_history"] if "loss" in x]
    seen = state.get("num_input_tokens_seen") or logs[-1].get("num_input_tokens_seen", 0)
    runtime = next(
        (x["train_runtime"] for x in state["log_history"] if "train_runtime" in x),
        time.perf_counter() - start,
    )
    return {
        "trained_tokens": None,
        "tokens": seen,
        "runtime_s": runtime,
        "final_loss": logs[-1]["loss"] if logs else None,
    }


# --- driver ------------------------------------------------------------------------------------

CHILDREN = {
    "baseline": lambda a: baseline(a, bf16=False),
    "baseline-bf16": lambda a: baseline(a, bf16=True),
    "danlu-plain": lambda a: danlu_run(a, best=False),
    "danlu": lambda a: danlu_run(a, best=True),
}


def child(args: argparse.Namespace) -> None:
    result = CHILDREN[args.child](args)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(result))


def run_child(name: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--cutoff",
        str(args.cutoff),
        "--lr",
        str(args.lr),
        "--workdir",
        str(args.workdir),
        "--seed",
        str(args.seed),
        "--danlu-set",
        *args.danlu_set,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    found = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not found:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(found[-1][len("RESULT ") :])


def show(name: str, r: dict) -> None:
    tps = r["trained_tokens"] / r["runtime_s"] if r.get("trained_tokens") else float("nan")
    aps = r["tokens"] / r["runtime_s"] if r.get("tokens") else float("nan")
    loss = f"{r['final_loss']:.4f}" if r.get("final_loss") is not None else "-"
    rss = f"{r['peak_rss_gib']:.2f}" if r.get("peak_rss_gib") else "-"
    mfu = f"{r['mfu_last']:.3f}" if r.get("mfu_last") is not None else "-"
    print(
        f"{name:<15} {tps:>12.1f} {aps:>12.1f} {r['runtime_s']:>9.1f} {rss:>9} {loss:>10} {mfu:>6}"
    )
    r["trained_tokens_per_s"] = tps


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--cutoff", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/danlu-bench-train"))
    p.add_argument("--only", nargs="*", default=list(CHILDREN), choices=list(CHILDREN))
    p.add_argument("--peer", choices=["llamafactory"], default=None)
    p.add_argument(
        "--danlu-set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra danlu config overrides for the `danlu` run (explore settings)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    print(
        f"data: {', '.join(f for f, _ in data_files())}; {args.steps} steps x batch {args.batch}, "
        f"cutoff {args.cutoff}, LoRA r={LORA['r']} all-linear; {os.cpu_count()} cpus"
    )
    print(
        f"{'run':<15} {'trained tok/s':>12} {'all tok/s':>12} {'time s':>9} {'peak GiB':>9} "
        f"{'final loss':>10} {'mfu':>6}"
    )
    results = {}
    for name in args.only:
        results[name] = run_child(name, args)
        show(name, results[name])
    if args.peer == "llamafactory" and (lf := llamafactory(args)) is not None:
        show("llamafactory", lf)
    if "baseline" in results and "danlu" in results:
        ratio = (
            results["danlu"]["trained_tokens_per_s"] / results["baseline"]["trained_tokens_per_s"]
        )
        print(f"ratio danlu / baseline (trained tokens/s): {ratio:.2f}x")


if __name__ == "__main__":
    main()
