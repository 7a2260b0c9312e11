"""The files the bad-input corpus feeds to danlu: a tiny model and its damaged copies, adapters
(good, for another base, pickle-only, prompt-learning), data files with one fault each, configs.

Built once per session in a temporary folder; every case names the file it breaks.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

GOOD_RECORDS = [{"instruction": f"question {i}?", "output": f"answer {i}."} for i in range(8)]


@dataclass
class Corpus:
    root: Path
    tiny: Path
    """A good 2-layer model folder (the session's tiny_model_dir)."""
    good_data: Path

    def path(self, name: str) -> Path:
        return self.root / name

    def config(self, name: str, **keys: Any) -> str:
        """A run config file: the tiny model, good data, 1 step, a fresh output_dir; `keys`
        override or add (None removes a key)."""
        base = {
            "model": str(self.tiny), "data": [str(self.good_data)], "method": "lora",
            "lora_rank": 2, "max_steps": 1, "save_steps": 1, "per_device_train_batch_size": 2,
            "cutoff_len": 64, "report_to": "none", "threads": 1, "data_cache": False,
            "output_dir": str(self.root / "runs" / name),
        }  # fmt: skip
        base.update(keys)
        base = {k: v for k, v in base.items() if v is not None}
        path = self.root / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(base, allow_unicode=True))
        return str(path)


def jsonl(path: Path, records: list[Any]) -> Path:
    lines = [
        r if isinstance(r, (str, bytes)) else json.dumps(r, ensure_ascii=False) for r in records
    ]
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def build(root: Path, tiny: Path, tokenizer: Any) -> Corpus:
    from tests.conftest import build_tiny_model

    root.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(root, tiny, jsonl(root / "good.jsonl", GOOD_RECORDS))
    other = build_tiny_model(root / "other-base", tokenizer, hidden=32)
    _models(corpus)
    _adapters(corpus, other)
    _data(corpus)
    return corpus


def _copy_model(corpus: Corpus, name: str) -> Path:
    dest = corpus.path(name)
    shutil.copytree(corpus.tiny, dest)
    return dest


def _models(c: Corpus) -> None:
    (c.path("no-config")).mkdir()
    (c.path("no-config") / "model.safetensors").write_bytes(b"x")
    _copy_model(c, "bad-config") / "config.json"
    (c.path("bad-config") / "config.json").write_text('{"model_type": "llama",\n  "hidden_size": }')
    weights = _copy_model(c, "truncated") / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    pickled = _copy_model(c, "pickle-only")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    remote = _copy_model(c, "remote-code")
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="danlu_custom", auto_map={"AutoModelForCausalLM": "modeling.M"})
    (remote / "config.json").write_text(json.dumps(config))
    c.path("not-gguf.gguf").write_text("this is not a GGUF file\n")
    c.path("cut.gguf").write_bytes(_real_gguf_head(20000))
    c.path("weights.txt").write_text("not a model\n")


def _real_gguf_head(n: int) -> bytes:
    from danlu.models import embedded_gguf

    with open(embedded_gguf("smollm2-135m-instruct"), "rb") as f:
        return f.read(n)


def _save_adapter(base: Path, dest: Path, config: Any, safe: bool = True) -> Path:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), config)
    model.save_pretrained(dest, safe_serialization=safe)
    return dest


def _adapters(c: Corpus, other: Path) -> None:
    from peft import LoraConfig, PrefixTuningConfig

    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    _save_adapter(c.tiny, c.path("lora"), lora)
    _save_adapter(other, c.path("lora-other-base"), lora)
    _save_adapter(c.tiny, c.path("lora-pickle"), lora, safe=False)
    prefix = PrefixTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM")
    _save_adapter(c.tiny, c.path("prefix"), prefix)
    _save_adapter(other, c.path("prefix-other-base"), prefix)
    shutil.copytree(c.path("lora"), c.path("lora-bad-config"))
    (c.path("lora-bad-config") / "adapter_config.json").write_text("{not json")
    shutil.copytree(c.path("lora"), c.path("lora-truncated"))
    weights = c.path("lora-truncated") / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    (c.path("not-an-adapter")).mkdir()


def _data(c: Corpus) -> None:
    ok = GOOD_RECORDS[0]
    turn = lambda *pairs: {"conversations": [{"role": r, "content": t} for r, t in pairs]}  # noqa: E731
    files = {
        "invalid-json.jsonl": [ok, '{"instruction": "q", "output": '],
        "missing-field.jsonl": [ok, {"instruction": "q"}],
        "empty-answer.jsonl": [ok, {"instruction": "q", "output": "  "}],
        "bad-utf8.jsonl": [ok, b'{"instruction": "caf\xe9", "output": "a"}'],
        "wrong-type.jsonl": [ok, {"instruction": ["q"], "output": "a"}],
        "not-object.jsonl": [ok, [1, 2]],
        "unknown-role.jsonl": [turn(("user", "q"), ("bot", "a"))],
        "double-assistant.jsonl": [turn(("user", "q"), ("assistant", "a"), ("assistant", "b"))],
        "assistant-first.jsonl": [turn(("assistant", "a"), ("user", "q"), ("assistant", "b"))],
        "user-user.jsonl": [turn(("user", "q"), ("user", "q2"), ("assistant", "a"))],
        "gpt-first.jsonl": [{"conversations": [{"from": "gpt", "value": "a"},
                                               {"from": "human", "value": "q"},
                                               {"from": "gpt", "value": "b"}]}],
        "no-assistant.jsonl": [turn(("system", "s"), ("user", "q"))],
        "late-system.jsonl": [turn(("user", "q"), ("system", "s"), ("assistant", "a"))],
        "observation-after-user.jsonl": [turn(("user", "q"), ("observation", "{}"), ("assistant", "a"))],
        "undetectable.jsonl": [{"question": "q", "answer": "a"}],
        "tools-not-json.jsonl": [{**turn(("user", "q"), ("assistant", "a")), "tools": "[{oops"}],
        "empty.jsonl": [],
        "text-only.jsonl": [{"text": "plain text for pretraining"}],
        "pairwise.jsonl": [{"instruction": "q", "chosen": "a", "rejected": "b"}],
        "with-system.jsonl": [{"instruction": "q", "output": "a", "system": "be brief"}],
        "pair-no-rejected.jsonl": [{"instruction": "q", "chosen": "a", "rejected": "b"},
                                   {"instruction": "q", "chosen": "a"}],
        "pair-empty-side.jsonl": [{"instruction": "q", "chosen": " ", "rejected": "b"}],
        "pair-same.jsonl": [{"instruction": "q", "chosen": "a.", "rejected": "a. "}],
        "kto-no-label.jsonl": [{**turn(("user", "q"), ("assistant", "a")), "kto_tag": True},
                               turn(("user", "q"), ("assistant", "b"))],
        "kto-bad-label.jsonl": [{**turn(("user", "q"), ("assistant", "a")), "kto_tag": "maybe"}],
        "grpo-answered.jsonl": [turn(("user", "q")), turn(("user", "q"), ("assistant", "a"))],
        "prompts.jsonl": [{"prompt": f"What is {i} + 1?", "solution": str(i + 1)} for i in range(8)],
    }  # fmt: skip
    for name, records in files.items():
        jsonl(c.path(name), records)
    c.path("broken-array.json").write_text(
        '[\n  {"instruction": "q", "output": "a"},\n  {"instruction" "q"}\n]\n'
    )
    c.path("garbage.parquet").write_bytes(b"PAR1 this is not parquet at all")
    c.path("no-column.csv").write_text("question,answer\nq,a\n")
    (c.path("empty-dir")).mkdir()
    c.path("reward-broken.py").write_text("def f(prompts, completions:\n")
    c.path("reward-short.py").write_text("def f(prompts, completions, **kw):\n    return [1.0]\n")
    c.path("bad.jinja").write_text("{% for m in messages %}{{ m.content }")
    c.path("strict.jinja").write_text(
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system role') }}"
        "{% endif %}{{ m.content }}{% endfor %}"
    )
    c.path("bad-deepspeed.json").write_text('{"zero_optimization": {"stage": 2,}}')
    c.path("disagree-deepspeed.json").write_text('{"train_micro_batch_size_per_gpu": 7}')
    c.path("hostfile-names").write_text("node-a slots=2\nnode-b slots=2\n")
    c.path("hostfile-dup").write_text("10.0.0.1 slots=2\n10.0.0.1 slots=2\n")
    c.path("list.yaml").write_text("- model: x\n")
    c.path("bad.yaml").write_text("model: [unclosed\n")
    c.path("dup.yaml").write_text(f"model: {c.tiny}\nlora_rank: 8\nmethod: lora\nlora_rank: 16\n")
    c.path("latin1.yaml").write_bytes("model: caf\xe9\n".encode("latin-1"))
    c.path("mc-bad.jsonl").write_text(json.dumps({"question": "q", "A": "x"}) + "\n")
    c.path("not-a-checkpoint").mkdir()
