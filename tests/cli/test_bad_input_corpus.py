"""The bad-input corpus (DESIGN §1's promise, every command): each kind of bad input or
environment fault ends, within a time limit, with exit code 2 (bad input) or 1 (environment),
one `danlu: error:` line that is the last line printed and names the file, line or key, and no
traceback. Cases run in this process through `danlu.cli.main` (fast); the few that need a real
process (the launcher's relay, a file-size limit) run one in `test_corpus_in_a_process`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from tests.cli import corpus as corpus_mod

from danlu.cli import main

TIMEOUT_S = 120


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[corpus_mod.Corpus], tuple[list[str], str]]
    """corpus -> (danlu argv, a fragment the error line must contain)."""
    code: int = 2


def _train(name: str, fragment: str, code: int = 2, **keys) -> Case:
    """A `danlu train` case: the corpus config with `keys` changed (corpus file names become
    their paths)."""

    def argv(c):
        return ["train", c.config(name, **{k: _resolve(c, v) for k, v in keys.items()})], fragment

    return Case(f"train-{name}", argv, code)


def _resolve(c, value):
    if isinstance(value, list):
        return [_resolve(c, v) for v in value]
    if isinstance(value, str) and "/" not in value and (c.root / value).exists():
        return str(c.path(value))
    return value


def _data_case(name: str, file: str, fragment: str = "", **keys) -> Case:
    def argv(c):
        path = c.path(file)
        return ["data", "preview", c.config(name, data=[str(path)], **keys)], f"{path}{fragment}"

    return Case(f"data-{name}", argv)


def _config_case(name: str, overrides: list[str], fragment: str) -> Case:
    def argv(c):
        return ["config", "check", c.config(name), *overrides], fragment

    return Case(f"config-{name}", argv)


def _chat(name: str, extra: Callable, fragment: Callable, code: int = 2) -> Case:
    def argv(c):
        return ["chat", *extra(c), "-q", "hi", "--max-new-tokens", "2"], fragment(c)

    return Case(f"chat-{name}", argv, code)


def _cmd(name: str, build: Callable, code: int = 2) -> Case:
    return Case(name, build, code)


DATA_FILE_CASES = [
    _data_case("invalid-json", "invalid-json.jsonl", ":2: invalid JSON"),
    _data_case("missing-field", "missing-field.jsonl", ":2: missing field 'output'"),
    _data_case("empty-answer", "empty-answer.jsonl", ":2: empty assistant content"),
    _data_case("bad-utf8", "bad-utf8.jsonl", ":2: invalid UTF-8"),
    _data_case("wrong-type", "wrong-type.jsonl", ":2: field 'instruction' must be a string"),
    _data_case("not-object", "not-object.jsonl", ":2: record must be a JSON object"),
    _data_case("unknown-role", "unknown-role.jsonl", ":1: unknown role 'bot'"),
    _data_case("double-assistant", "double-assistant.jsonl", ":1: two consecutive assistant"),
    _data_case("assistant-first", "assistant-first.jsonl", ":1: turn 1 is an assistant turn"),
    _data_case("user-user", "user-user.jsonl", ":1: two consecutive user turns"),
    _data_case("gpt-first", "gpt-first.jsonl", ":1: turn 1 is an assistant turn"),
    _data_case("no-assistant", "no-assistant.jsonl", ":1: no assistant turn"),
    _data_case("late-system", "late-system.jsonl", ":1: system turn 2 must be the first turn"),
    _data_case("observation-after-user", "observation-after-user.jsonl", ":1: an observation turn"),
    _data_case("undetectable", "undetectable.jsonl", ":1:"),
    _data_case("empty", "empty.jsonl"),
    _data_case("text-for-sft", "text-only.jsonl"),
    _data_case("pairwise-for-sft", "pairwise.jsonl"),
    _data_case("broken-array", "broken-array.json", ":3: invalid JSON"),
    _data_case("garbage-parquet", "garbage.parquet", ": not a readable Parquet file"),
    _data_case("csv-no-column", "no-column.csv"),
    _data_case("empty-dir", "empty-dir", ": directory holds no data files"),
    _data_case("missing-file", "nothing-here.jsonl", ": no such data file or directory"),
    _cmd(
        "data-format-mismatch",
        lambda c: (
            [
                "data",
                "preview",
                c.config("mismatch", data=[{"path": str(c.good_data), "format": "sharegpt"}]),
            ],
            f"{c.good_data}:1: missing field 'conversations'",
        ),
    ),
    _data_case("tools-not-json", "tools-not-json.jsonl", ":1:"),
    _data_case(
        "pair-no-rejected", "pair-no-rejected.jsonl", ":2: missing field 'rejected'", stage="dpo"
    ),
    _data_case(
        "pair-empty-side",
        "pair-empty-side.jsonl",
        ":1: empty assistant content (field 'chosen')",
        stage="rm",
    ),
    _data_case(
        "pair-same", "pair-same.jsonl", ":1: chosen and rejected are the same answer", stage="dpo"
    ),
    _data_case("sft-data-for-dpo", "good.jsonl", "", stage="dpo"),
    _data_case("kto-no-label", "kto-no-label.jsonl", ":2: missing field 'kto_tag'", stage="kto"),
    _data_case(
        "kto-bad-label",
        "kto-bad-label.jsonl",
        ":1: field 'kto_tag' must be true or false",
        stage="kto",
    ),
    _data_case(
        "grpo-answered",
        "grpo-answered.jsonl",
        ":2: the last turn (turn 2) is an answer",
        stage="grpo",
    ),
]
"""A data file with one fault each, through `danlu data preview`."""

CONFIG_CASES = [
    _config_case("unknown-key", ["lora_rnak=8"], "unknown key 'lora_rnak' (did you mean 'lora_rank'?)"),
    _config_case("wrong-type", ["lora_rank=abc"], "lora_rank must be an integer"),
    _config_case("out-of-range", ["lora_rank=0"], "lora_rank must be >= 1"),
    _config_case("no-equals", ["lora_rank"], "override 'lora_rank': expected key=value"),
    _config_case("deepspeed-preset", ["deepspeed=zero9"], "deepspeed must be a preset"),
    _config_case("deepspeed-missing-json", ["deepspeed=missing.json"], "deepspeed must be a preset"),
    _config_case("template-name", ["template=nonesuch"], "template must be auto, a built-in"),
    _config_case("template-missing-file", ["template=missing.jinja"], "template must be auto"),
    _config_case("bf16-fp16", ["bf16=true", "fp16=true"], "bf16=True, fp16=True: cannot both be true"),
    _config_case("qlora-no-bits", ["method=qlora"], "qlora needs quantization_bit"),
    _config_case("packing-prefix", ["packing=true", "method=prefix"], "packing cannot be used"),
    _config_case("val-size", ["val_size=1.5"], "val_size must be a fraction"),
    _config_case("weight-zero", ["data=[{path: x, weight: 0}]"], "weights must all be > 0"),
    _config_case("lr-zero", ["learning_rate=0"], "learning_rate must be > 0"),
    _config_case("max-steps-zero", ["max_steps=0"], "max_steps must be -1 or >= 1"),
    _config_case("node-rank", ["nnodes=2", "node_rank=2"], "node_rank must be < nnodes"),
    _config_case("port", ["master_port=70000"], "master_port must be in 1..65535"),
    _config_case("ds-without-preset", ["distributed=deepspeed"], "distributed: deepspeed needs"),
    _config_case("fsdp-offload", ["fsdp_offload=true"], "fsdp_offload needs distributed: fsdp"),
    _config_case("eval-task", ["eval_task=[bleu]"], "eval_task must list only"),
    _config_case("stage", ["stage=rlhf"], "stage"),
    _config_case("method", ["method=lorax"], "method"),
    _config_case("zero3-4bit", ["deepspeed=zero3", "quantization_bit=4", "method=qlora"], "ZeRO-3"),
    _config_case("lora-dropout", ["lora_dropout=1"], "lora_dropout must be in [0, 1)"),
    _config_case("cutoff", ["cutoff_len=1"], "cutoff_len must be >= 2"),
    _config_case("ia3-ff", ["method=ia3", "ia3_target=[q_proj]", "ia3_feedforward=[down_proj]"],
                 "ia3_feedforward must be a subset"),
    _config_case("adalora-r", ["adalora_init_r=2", "adalora_target_r=4"], "adalora_init_r must be >="),
    _config_case("empty-token", ["new_tokens=['a', ' ']"], "new_tokens must not contain empty"),
    _config_case("accumulation", ["gradient_accumulation_steps=0"], "gradient_accumulation_steps"),
    _config_case("warmup", ["warmup_ratio=1"], "warmup_ratio must be in [0, 1)"),
    _config_case("save-limit", ["save_total_limit=0"], "save_total_limit must be >= 1"),
    _config_case("data-field", ["data=[{pth: x}]"], "pth"),
    _config_case("columns-type", ["data=[{path: x, columns: 3}]"], "columns"),
    _config_case("threads", ["threads=-1"], "threads must be >= 0"),
    _config_case("workers", ["preprocessing_num_workers=-2"], "preprocessing_num_workers"),
    _config_case("logging-steps", ["logging_steps=0"], "logging_steps must be >= 1"),
    _config_case("eval-top-p", ["eval_top_p=0"], "eval_top_p must be in (0, 1]"),
    _config_case("mc-without-data", ["eval_task=[multiple_choice]"], "multiple_choice needs mc_data"),
    _config_case("n-shot", ["n_shot=5"], "n_shot > 0 needs mc_dev"),
    _config_case("fsdp-4bit", ["distributed=fsdp", "quantization_bit=4", "method=qlora"], "FSDP cannot"),
    _config_case("fsdp-sharding", ["fsdp_sharding=hybrid_shard"], "fsdp_sharding needs distributed"),
]  # fmt: skip
"""Config values, through `danlu config check` (the same loader every command uses)."""

CONFIG_FILE_CASES = [
    _cmd("config-file-missing", lambda c: (["config", "check", str(c.path("none.yaml"))],
                                           f"{c.path('none.yaml')}: no such config file")),
    _cmd("config-file-dir", lambda c: (["config", "check", str(c.path("empty-dir"))],
                                       str(c.path("empty-dir")))),
    _cmd("config-file-list", lambda c: (["config", "check", str(c.path("list.yaml"))],
                                        f"{c.path('list.yaml')}: expected a mapping")),
    _cmd("config-file-yaml", lambda c: (["config", "check", str(c.path("bad.yaml"))],
                                        f"{c.path('bad.yaml')}:")),
    _cmd("config-file-duplicate", lambda c: (["config", "check", str(c.path("dup.yaml"))],
                                             f"{c.path('dup.yaml')}:4: key 'lora_rank' is set twice (lines 2 and 4)")),
    _cmd("config-file-latin1", lambda c: (["config", "check", str(c.path("latin1.yaml"))],
                                          str(c.path("latin1.yaml")))),
    _cmd("config-keys-unknown", lambda c: (["config", "keys", "lora_rnak"], "lora_rnak")),
]  # fmt: skip

MODEL = {
    "model-missing": ("nothing-here", "no such file or folder"),
    "model-no-config": ("no-config", "no config.json"),
    "model-bad-config": ("bad-config", "config.json is not valid JSON (line 2"),
    "model-truncated": ("truncated", "model.safetensors is truncated"),
    "model-pickle-only": ("pickle-only", "only pickle weights (pytorch_model.bin)"),
    "model-remote-code": ("remote-code", "trust_remote_code: true"),
    "model-not-gguf": ("not-gguf.gguf", "is not a GGUF file"),
    "model-cut-gguf": ("cut.gguf", "is truncated or corrupt"),
    "model-txt-file": ("weights.txt", "a file must be .gguf"),
}
"""A `model:` that cannot be loaded, for every command that loads one."""

ADAPTER = {
    "adapter-missing": ("nothing-here", "no such folder"),
    "adapter-not-peft": ("not-an-adapter", "no adapter_config.json"),
    "adapter-bad-config": ("lora-bad-config", "adapter_config.json is not valid JSON"),
    "adapter-truncated": ("lora-truncated", "adapter_model.safetensors is truncated"),
    "adapter-pickle": ("lora-pickle", "only pickle weights (adapter_model.bin)"),
    "adapter-other-base": ("lora-other-base", "was trained on another base model"),
    "prefix-other-base": ("prefix-other-base", "was trained on another base model"),
}
"""An `adapter:` that cannot be applied to the tiny model."""
TRAIN_FRAGMENT = {"prefix-other-base": "PREFIX_TUNING adapter, which peft cannot load for further"}
"""Where `danlu train` refuses an adapter earlier than the other commands do."""


def _load_cases(kind: str, fragment: str, model: Callable, adapter: Callable | None = None):
    """One bad model (or adapter on the tiny model) through every command that loads one."""

    def flags(c) -> list[str]:
        return ["--model", model(c), *(["--adapter", adapter(c)] if adapter else [])]

    def keys(c) -> dict[str, str]:
        return {"model": model(c), **({"adapter": adapter(c)} if adapter else {})}

    def train(c):
        return ["train", c.config(f"train-{kind}", **keys(c))], TRAIN_FRAGMENT.get(kind, fragment)

    def evaluate(c):
        cfg = c.config(f"eval-{kind}", eval_data=[str(c.good_data)], eval_task=["perplexity"],
                       **keys(c))  # fmt: skip
        return ["eval", cfg], fragment

    cases = [
        Case(f"train-{kind}", train),
        Case(f"chat-{kind}", lambda c: (["chat", *flags(c), "-q", "hi"], fragment)),
        Case(f"serve-{kind}", lambda c: (["serve", *flags(c), "--port", "0"], fragment)),
        Case(f"eval-{kind}", evaluate),
    ]
    if adapter is None:  # merge takes a good adapter onto the bad base
        merged = lambda c: c.root / "merged" / kind  # noqa: E731
        cases.append(Case(f"merge-{kind}", lambda c: (
            ["merge", *flags(c), "--adapter", str(c.path("lora")), "--out", str(merged(c))],
            fragment)))  # fmt: skip
    return cases


def _model_cases() -> list[Case]:
    cases = []
    for kind, (file, fragment) in MODEL.items():
        cases += _load_cases(kind, fragment, lambda c, f=file: str(c.path(f)))
    for kind, (file, fragment) in ADAPTER.items():
        tiny = lambda c: str(c.tiny)  # noqa: E731
        cases += _load_cases(kind, fragment, tiny, lambda c, f=file: str(c.path(f)))
    return cases


TRAIN_CASES = [
    _train("output-dir-is-file", "is a file, not a folder", output_dir="good.jsonl"),
    _train("output-dir-under-proc", "output_dir: cannot write in /proc", code=1,
           output_dir="/proc/danlu-run"),
    _train("resume-not-checkpoint", "not-a-checkpoint", resume_from_checkpoint="not-a-checkpoint"),
    _train("eval-steps-no-val", "eval_steps: there is no held-out data", eval_steps=1),
    _train("fp16-on-cpu", "fp16: float16 mixed precision needs a GPU", fp16=True),
    _train("bad-deepspeed-json", "bad-deepspeed.json", deepspeed="bad-deepspeed.json"),
    _train("new-tokens-file", "new_tokens_file", new_tokens_file="nothing-here.txt"),
    _train("template-bad-jinja", "bad.jinja", template="bad.jinja"),
    _train("template-raises", "no system role", template="strict.jinja",
           data=["with-system.jsonl"]),
    _train("lora-target-absent", "lora_target", lora_target=["no_such_proj"]),
    _train("freeze-module-absent", "freeze_trainable_modules", method="freeze",
           freeze_trainable_modules=["no_such_module"]),
    _train("hostfile-names", "hostfile-names:1", hostfile="hostfile-names"),
    _train("hostfile-dup", "hostfile-dup:2", hostfile="hostfile-dup"),
    _train("stage-not-built", "stage", stage="ppo"),
    _train("bad-data", "invalid-json.jsonl:2", data=["invalid-json.jsonl"]),
    _train("assistant-first-data", "assistant-first.jsonl:1", data=["assistant-first.jsonl"]),
    _train("grpo-unknown-reward", "reward_funcs: 'bleu' is not a reward function", stage="grpo",
           data=["prompts.jsonl"], reward_funcs=["bleu"]),
    _train("grpo-missing-rm", "nothing-here", stage="grpo", data=["prompts.jsonl"],
           reward_funcs=["rm:nothing-here"]),
    _train("grpo-prefix", "stage grpo generates with transformers' generate", stage="grpo",
           data=["prompts.jsonl"], method="ptuning_v2"),
    _train("kto-precompute", "precompute_ref_log_probs works for stage dpo only", stage="kto",
           precompute_ref_log_probs=True),
    _train("dpo-packing", "packing works for pt and sft only", stage="dpo", packing=True),
]  # fmt: skip


def _reward_case(name: str, file: str, fragment: str) -> Case:
    """grpo with a user reward function from the corpus that is wrong (found at import, or
    when it first scores)."""

    def argv(c):
        keys = {"stage": "grpo", "data": [str(c.path("prompts.jsonl"))], "num_generations": 2,
                "max_completion_length": 4, "reward_funcs": [f"python:{c.path(file)}:f"]}  # fmt: skip
        return ["train", c.config(name, **keys)], fragment.format(path=c.path(file))

    return Case(f"train-{name}", argv)


TRAIN_CASES += [
    _reward_case("grpo-reward-syntax", "reward-broken.py",
                 "reward_funcs: {path}: cannot import it: SyntaxError at line 1"),
    _reward_case("grpo-reward-short", "reward-short.py",
                 "({path}:1) returned 1 rewards for 4 completions"),
]  # fmt: skip


def _second_run_refused(c):
    from danlu.utils.fs import atomic_dir

    out = c.root / "runs" / "held"
    with atomic_dir(out / "final"):
        pass
    (out / "config.yaml").write_text("model: x\n")
    return ["train", c.config("held", output_dir=str(out))], "already holds a run"


OTHER_CASES = [
    _cmd("train-output-dir-holds-run", _second_run_refused),
    _chat("temperature", lambda c: ["--model", str(c.tiny), "--temperature", "5"],
          lambda c: "--temperature"),
    _chat("top-p", lambda c: ["--model", str(c.tiny), "--top-p", "0"], lambda c: "--top-p"),
    _chat("devices", lambda c: ["--model", str(c.tiny), "--devices", "gpu0"], lambda c: "--devices"),
    _chat("template", lambda c: ["--model", str(c.tiny), "--template", "nonesuch"],
          lambda c: "nonesuch"),
    _cmd("chat-empty-question", lambda c: (["chat", "--model", str(c.tiny), "-q", " "],
                                           "-q: the question is empty")),
    _cmd("merge-out-not-empty", lambda c: (["merge", "--model", str(c.tiny), "--adapter",
                                            str(c.path("lora")), "--out", str(c.path("lora"))],
                                           "already exists and is not empty")),
    _cmd("merge-out-is-file", lambda c: (["merge", "--model", str(c.tiny), "--adapter",
                                          str(c.path("lora")), "--out", str(c.good_data)],
                                         str(c.good_data))),
    _cmd("merge-out-under-proc", lambda c: (["merge", "--model", str(c.tiny), "--adapter",
                                             str(c.path("lora")), "--out", "/proc/danlu-merged"],
                                            "--out: cannot write in /proc"), code=1),
    _cmd("merge-prefix", lambda c: (["merge", "--model", str(c.tiny), "--adapter",
                                     str(c.path("prefix")), "--out", str(c.root / "merged" / "p")],
                                    "only LoRA/AdaLoRA/IA3 adapters can be merged")),
    _cmd("merge-other-base", lambda c: (["merge", "--model", str(c.tiny), "--adapter",
                                         str(c.path("lora-other-base")), "--out",
                                         str(c.root / "merged" / "o")], "another base model")),
    _cmd("merge-missing-flag", lambda c: (["merge", "--model", str(c.tiny)], "--adapter")),
    _cmd("eval-nothing", lambda c: (["eval", c.config("eval-nothing")], "eval: nothing to evaluate")),
    _cmd("eval-data-missing", lambda c: (["eval", c.config("eval-missing", eval_data=[str(c.path("nope.jsonl"))])],
                                         str(c.path("nope.jsonl")))),
    _cmd("eval-mc-bad", lambda c: (["eval", c.config("eval-mc", mc_data=str(c.path("mc-bad.jsonl")),
                                                     eval_task=["multiple_choice"])],
                                   str(c.path("mc-bad.jsonl")))),
    _cmd("eval-bad-record", lambda c: (["eval", c.config("eval-bad", eval_data=[str(c.path("invalid-json.jsonl"))])],
                                       f"{c.path('invalid-json.jsonl')}:2")),
    _cmd("estimate-unknown-model", lambda c: (["estimate", "--model", "no-such-model-7b"], "no-such-model-7b")),
    _cmd("estimate-bad-config", lambda c: (["estimate", "--model", str(c.path("bad-config"))],
                                           "config.json")),
    _cmd("estimate-bad-method", lambda c: (["estimate", "--method", "lorax"], "--method")),
    _cmd("plan-bad-gpus", lambda c: (["plan", "--gpus", "lots"], "--gpus")),
    _cmd("plan-unknown-model", lambda c: (["plan", "--model", "no-such-model-7b", "--gpus", "1x24GB"],
                                          "no-such-model-7b")),
    _cmd("unknown-command", lambda c: (["brew"], "invalid choice: 'brew'")),
    _cmd("train-no-config", lambda c: (["train", str(c.path("none.yaml"))], "no such config file")),
    _cmd("train-bad-nproc", lambda c: (["train", c.config("nproc"), "--nproc", "x"], "--nproc")),
    _cmd("train-late-override", lambda c: (["train", c.config("late"), "--quiet", "lora_rnak=2"],
                                           "lora_rnak")),
    _cmd("data-preview-bad-n", lambda c: (["data", "preview", c.config("n"), "--n", "many"], "--n")),
]  # fmt: skip


def _docs(c, name: str, files: dict[str, str]) -> str:
    folder = c.root / "rag" / name
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in files.items():
        (folder / file).write_text(text, encoding="utf-8")
    return str(folder)


def _rag_index(c, *extra: str) -> list[str]:
    docs = _docs(c, "good", {"tea.md": "# Tea\nGreen tea wants water at 80 °C."})
    return [
        "rag",
        "index",
        "--docs",
        docs,
        "--index",
        str(c.root / "rag" / "ix"),
        "--quiet",
        *extra,
    ]


def _other_settings(c):
    assert main(_rag_index(c)) == 0  # the index, as first built
    return _rag_index(c, "chunk_size=100"), "built with chunk_size 200, this run has 100"


RAG_CASES = [
    _cmd("rag-index-missing-docs", lambda c: (["rag", "index", "--docs", str(c.path("nothing-here")),
                                               "--index", str(c.root / "rag" / "x")],
                                              f"docs: {c.path('nothing-here')}: no such file or folder")),
    _cmd("rag-index-no-docs", lambda c: (["rag", "index", "--index", str(c.root / "rag" / "x")],
                                         "rag_docs: nothing to index")),
    _cmd("rag-index-no-readable-files", lambda c: (["rag", "index", "--docs", _docs(c, "png", {"a.png": "x"}),
                                                    "--index", str(c.root / "rag" / "x")],
                                                   "rag_docs: no .txt/.md/.html/.pdf/.docx/.jsonl file")),
    _cmd("rag-index-empty-corpus", lambda c: (["rag", "index", "--docs", _docs(c, "blank", {"a.txt": " "}),
                                               "--index", str(c.root / "rag" / "blank-ix")],
                                              "rag_docs: no text found to index")),
    _cmd("rag-index-bad-embedder", lambda c: (_rag_index(c, f"embedding_model={c.root / 'nothing-here'}"),
                                              "not a sentence-transformers folder")),
    _cmd("rag-index-overlap", lambda c: (_rag_index(c, "chunk_overlap=150"),
                                         "chunk_overlap must be in [0, chunk_size / 2)")),
    _cmd("rag-index-other-settings", _other_settings),
    _cmd("rag-ask-no-index", lambda c: (["rag", "ask", "--index", str(c.root / "rag" / "none"), "q?"],
                                        "no index there (build one with danlu rag index)")),
    _cmd("rag-ask-template-slots", lambda c: (["rag", "ask", "--index", str(c.root / "rag" / "none"),
                                               "rag_template=Answer: {question}", "q?"],
                                              "rag_template")),
    _cmd("eval-retrieval-no-data", lambda c: (["eval", c.config("eval-retr", eval_task=["retrieval"])],
                                              "retrieval needs retrieval_data")),
    _cmd("eval-retrieval-bad-record", lambda c: (["eval", c.config("eval-retr-ix", eval_task=["retrieval"],
                                                                   retrieval_data=str(c.good_data))],
                                                 f"{c.good_data}:1: a retrieval record needs a 'question'")),
    _cmd("serve-rag-no-index", lambda c: (["serve", "--model", str(c.tiny), "--port", "0", "--rag-index",
                                           str(c.root / "rag" / "none")], "no index there")),
    _cmd("serve-bad-embedder", lambda c: (["serve", "--model", str(c.tiny), "--port", "0",
                                           "--embedding-model", str(c.path("nothing-here"))],
                                          "not a sentence-transformers folder")),
    _cmd("serve-llamacpp-hf-folder", lambda c: (["serve", "--backend", "llamacpp", "--model", str(c.tiny),
                                                 "--port", "0"],
                                                f"--backend llamacpp: model '{c.tiny}' is not a .gguf file")),
    _cmd("serve-llamacpp-adapter", lambda c: (["serve", "--backend", "llamacpp", "--model", str(c.tiny),
                                               "--adapter", str(c.path("lora")), "--port", "0"],
                                              "--backend llamacpp serves a GGUF as it is; merge the adapter")),
    _cmd("serve-llamacpp-missing-gguf", lambda c: (["serve", "--backend", "llamacpp", "--model",
                                                    str(c.path("nothing.gguf")), "--port", "0"],
                                                   f"model '{c.path('nothing.gguf')}': no such file")),
    _cmd("serve-bad-backend", lambda c: (["serve", "--backend", "tgi", "--model", str(c.tiny), "--port", "0"],
                                         "--backend: invalid choice: 'tgi'")),
    _cmd("rag-pgvector-no-dsn", lambda c: (_rag_index(c, "store=pgvector"), "store pgvector needs pg_dsn")),
    _cmd("rag-pgvector-unreachable", lambda c: (_rag_index(c, "store=pgvector",
                                                           "pg_dsn=postgresql://danlu@127.0.0.1:1/none"),
                                                "pg_dsn: cannot connect:")),
    _cmd("rag-ask-bad-top-k", lambda c: (["rag", "ask", "--index", "x", "--top-k", "0", "q?"],
                                         "top_k must be >= 1")),
]  # fmt: skip


def _export(c, *extra: str) -> list[str]:
    return ["export", "--model", str(c.tiny), *extra]


EXPORT_CASES = [
    _cmd("export-out-not-empty", lambda c: (_export(c, "--out", str(c.path("lora"))),
                                            "--out: '" + str(c.path("lora")) + "' already exists and is not empty")),
    _cmd("export-hf-quantised", lambda c: (_export(c, "--format", "hf", "--quant", "q8_0", "--out",
                                                   str(c.root / "export" / "q")),
                                           "--quant: only --format gguf is quantised")),
    _cmd("export-bad-quant", lambda c: (_export(c, "--quant", "q3", "--out", str(c.root / "export" / "q3")),
                                        "--quant: invalid choice: 'q3'")),
    _cmd("export-prefix-adapter", lambda c: (_export(c, "--format", "hf", "--adapter", str(c.path("prefix")),
                                                     "--out", str(c.root / "export" / "p")),
                                             "only LoRA/AdaLoRA/IA3 adapters can be merged")),
    _cmd("export-missing-model", lambda c: (["export", "--model", str(c.path("nothing-here")), "--format", "hf",
                                             "--out", str(c.root / "export" / "m")], "nothing-here")),
    _cmd("export-missing-out", lambda c: (_export(c), "--out")),
]  # fmt: skip

CASES = (
    DATA_FILE_CASES
    + CONFIG_CASES
    + CONFIG_FILE_CASES
    + _model_cases()
    + TRAIN_CASES
    + OTHER_CASES
    + RAG_CASES
    + EXPORT_CASES
)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, tiny_model_dir, tokenizer):
    return corpus_mod.build(tmp_path_factory.mktemp("corpus"), tiny_model_dir, tokenizer)


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def expired(*_):
        raise TimeoutError(f"no answer within {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_main(argv: list[str]) -> int:
    import torch

    threads = torch.get_num_threads()
    try:
        with _time_limit(TIMEOUT_S):
            return main(argv)
    except SystemExit as exc:  # argparse
        return int(exc.code or 0)
    finally:
        torch.set_num_threads(threads)


def assert_one_error_line(code: int, want: int, out: str, err: str, fragment: str) -> str:
    assert "Traceback" not in out + err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("danlu: error:")]
    assert len(errors) == 1, err[-3000:]
    assert lines[-1] == errors[0], f"not the last line: {err[-2000:]}"
    assert fragment in errors[0], errors[0]
    assert code == want, errors[0]
    return errors[0]


def test_the_corpus_is_large():
    assert len(CASES) >= 144
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_gives_one_error_line(case, corpus, capfd):
    argv, fragment = case.argv(corpus)
    code = run_main(argv)
    out, err = capfd.readouterr()
    assert_one_error_line(code, case.code, out, err, fragment)


def _process(argv: list[str], preexec=None, timeout: int = TIMEOUT_S) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([sys.executable, "-m", "danlu", *argv], capture_output=True, text=True,
                          env=env, timeout=timeout, preexec_fn=preexec)  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow  # real processes: the launcher with 2 ranks, a file-size limit
@pytest.mark.parametrize("kind", ["two-ranks-bad-data", "file-too-large"])
def test_corpus_in_a_process(kind, corpus):
    if kind == "two-ranks-bad-data":
        bad = corpus.path("invalid-json.jsonl")
        argv = ["train", corpus.config("ranks", data=[str(bad)]), "--nproc", "2"]
        code, out, err = _process(argv)
        line = assert_one_error_line(code, 2, out, err, f"{bad}:2: invalid JSON")
        assert "ChildFailedError" not in err
    else:
        argv = ["train", corpus.config("efbig", save_steps=1)]
        code, out, err = _process(argv, preexec=_file_size_limit(64 * 1024))
        line = assert_one_error_line(code, 1, out, err, "File too large")
    assert line.startswith("danlu: error: ")


@pytest.fixture(scope="session")
def mounts(tmp_path_factory):
    """A read-only file system and two small ones (a full disk), as tmpfs mounts; skipped where
    this process may not mount (CI and these machines run as root)."""
    root = tmp_path_factory.mktemp("mounts")
    made = []
    for name, options in {"ro": "ro,size=1m", "tiny": "size=64k", "small": "size=3m"}.items():
        (root / name).mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(root / name)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            for path in made:
                subprocess.run(["umount", str(path)], check=False)
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
        made.append(root / name)
    yield {p.name: p for p in made}
    for path in made:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _mounted_case(c, m, kind):
    big = corpus_mod.jsonl(c.path("big.jsonl"), [
        {"instruction": f"question {i} " * 8, "output": f"answer {i} " * 20} for i in range(600)
    ])  # fmt: skip
    if kind == "train-output-dir-read-only":
        return (
            ["train", c.config(kind, output_dir=str(m["ro"] / "run"))],
            1,
            "output_dir: cannot write in",
        )
    if kind == "merge-out-read-only":
        argv = [
            "merge",
            "--model",
            str(c.tiny),
            "--adapter",
            str(c.path("lora")),
            "--out",
            str(m["ro"] / "m"),
        ]
        return argv, 1, "--out: cannot write in"
    if kind == "danlu-home-full":  # the test points DANLU_HOME at the 64 KiB mount
        return ["train", c.config(kind, data=[str(big)])], 1, f"data cache {m['tiny']}"
    # a full model's first checkpoint does not fit in 3 MB
    out = m["small"] / "run"
    return (
        ["train", c.config(kind, method="full", output_dir=str(out))],
        1,
        ("saving checkpoint step-1 failed: No space left on device"),
    )


MOUNTED = [
    "train-output-dir-read-only",
    "merge-out-read-only",
    "danlu-home-full",
    "disk-full-at-save",
]


@pytest.mark.parametrize("kind", MOUNTED)
def test_bad_environment_gives_one_error_line(kind, corpus, mounts, capfd, monkeypatch):
    if kind == "danlu-home-full":
        monkeypatch.setenv("DANLU_HOME", str(mounts["tiny"]))
    argv, code, fragment = _mounted_case(corpus, mounts, kind)
    got = run_main(argv)
    out, err = capfd.readouterr()
    assert_one_error_line(got, code, out, err, fragment)
    if kind == "disk-full-at-save":
        assert not list(
            (mounts["small"] / "run").rglob("*.safetensors")
        )  # nothing half-written kept


def test_rag_index_refused_before_it_creates_an_index(corpus, capfd):
    where = corpus.root / "rag" / "never-made"
    assert (
        run_main(
            ["rag", "index", "--docs", str(corpus.path("nothing-here")), "--index", str(where)]
        )
        == 2
    )
    capfd.readouterr()
    assert not where.exists()
