"""build_dataset: cache reuse and invalidation, parallel == serial, counts, report, stages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from tests.conftest import shared_path

from danlu.config.sections import DataArgs, DataSource
from danlu.data import cache
from danlu.data.pipeline import build_dataset
from danlu.data.report import save_report
from danlu.utils.errors import UsageError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setattr(cache, "cache_root", lambda: root)
    return root


@dataclass
class Toy:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    dropped: str | None = None
    chosen: object = None
    rejected: object = None


def toy_encoder(tokenizer, args, stage):
    """Token = character code; assistant characters trained; drops answers saying 'DROP'."""

    def encode(conv):
        ids, labels = [], []
        for m in conv.messages:
            chars = [ord(c) for c in m.content]
            ids += chars
            labels += chars if m.role == "assistant" else [-100] * len(chars)
        if any(m.content == "DROP" for m in conv.messages):
            return Toy([], [], dropped="toy drop")
        cut = len(ids) > args.cutoff_len
        return Toy(ids[: args.cutoff_len], labels[: args.cutoff_len], truncated=cut)

    return encode


def write_jsonl(path, records):
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return str(path)


def qa(n, prefix="q"):
    return [{"instruction": f"{prefix}{i}", "output": f"a{i}"} for i in range(n)]


@dataclass
class Log:
    lines: list[str] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        self.lines.append(line)


def build(tmp_path, sources, encoder=toy_encoder, **kw):
    kw.setdefault("preprocessing_num_workers", 1)
    log = Log()
    args = DataArgs(data=sources, **kw)
    return (*build_dataset(args, None, "sft", 0, encoder=encoder, log=log, keep_source=True), log)


def test_tokens_labels_and_source_columns(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", qa(3))
    train, evals, report, _ = build(tmp_path, [DataSource(path)])
    assert evals is None and len(train) == 3
    rows = sorted(train, key=lambda r: r["source"])
    assert rows[0] == {
        "input_ids": [113, 48, 97, 48],
        "labels": [-100, -100, 97, 48],
        "source": f"{path}:1",
    }
    assert report["tokens"] == 12 and report["trained_tokens"] == 6


def test_second_run_reuses_the_cache_and_says_so(tmp_path, cache_dir):
    path = write_jsonl(tmp_path / "d.jsonl", qa(20))
    first, _, report1, log1 = build(tmp_path, [DataSource(path)])
    second, _, report2, log2 = build(tmp_path, [DataSource(path)])
    assert report1["sources"][0]["cache"] == "miss" and report2["sources"][0]["cache"] == "hit"
    assert any("20 samples reused from the cache" in line for line in log2.lines)
    assert not any("reused" in line for line in log1.lines)
    assert first[:] == second[:]
    assert len([p for p in cache_dir.iterdir() if not p.name.startswith(".")]) == 1  # no temp left
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]


def test_cache_misses_when_data_or_settings_change(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", qa(5))
    build(tmp_path, [DataSource(path)])
    *_, log = build(tmp_path, [DataSource(path)], cutoff_len=3)
    assert not any("reused" in line for line in log.lines)
    write_jsonl(tmp_path / "d.jsonl", qa(6))
    train, _, report, _ = build(tmp_path, [DataSource(path)])
    assert report["sources"][0]["cache"] == "miss" and len(train) == 6
    _, _, report, _ = build(tmp_path, [DataSource(path)], data_cache=False)
    assert report["sources"][0]["cache"] == "miss"


def test_parallel_workers_give_the_same_dataset(tmp_path, monkeypatch):
    import danlu.data.tokenize as tokenize

    monkeypatch.setattr(tokenize, "BATCH", 7)  # many batches in flight across 2 workers
    path = write_jsonl(tmp_path / "d.jsonl", qa(100))
    serial, *_ = build(tmp_path, [DataSource(path)], data_cache=False)
    parallel, _, _report, log = build(tmp_path, [DataSource(path)], data_cache=False,
                                     preprocessing_num_workers=2)  # fmt: skip
    assert serial[:] == parallel[:]
    assert any("with 2 worker(s)" in line for line in log.lines)


def test_report_counts_skipped_dropped_truncated(tmp_path):
    records = [*qa(4), {"instruction": "x", "output": "DROP"}, {"instruction": "x"},
               {"instruction": "long question", "output": "a"}]  # fmt: skip
    path = write_jsonl(tmp_path / "d.jsonl", records)
    _train, _, report, _ = build(tmp_path, [DataSource(path)], on_bad_record="skip", cutoff_len=6)
    assert (report["records"], report["kept"], report["truncated"]) == (7, 5, 1)
    assert report["skipped"] == {"missing field": 1}
    assert report["dropped"] == {"toy drop": 1}
    assert report["summary"] == (
        "5 kept, 1 truncated, 1 dropped (toy drop: 1), 1 bad records skipped (missing field: 1); "
        "5 train / 0 eval"
    )
    out = save_report(report, tmp_path / "run")
    assert json.loads(out.read_text())["dropped"] == {"toy drop": 1}


def test_error_mode_names_file_and_line_and_leaves_no_cache(tmp_path, cache_dir):
    path = write_jsonl(tmp_path / "d.jsonl", [*qa(2), {"instruction": "x"}])
    with pytest.raises(UsageError, match=r"d\.jsonl:3: missing field 'output' \(format alpaca\)$"):
        build(tmp_path, [DataSource(path)])
    assert not list(cache_dir.iterdir())


def test_everything_dropped_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "x", "output": "DROP"}] * 2)
    with pytest.raises(UsageError) as e:
        build(tmp_path, [DataSource(path)])
    assert str(e.value) == f"{path}: no samples left after tokenisation (dropped: 2 toy drop)"


def test_stage_must_fit_the_format(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "doc"}])
    with pytest.raises(UsageError) as e:
        build(tmp_path, [DataSource(path)])
    assert (
        str(e.value)
        == f"{path}: stage sft needs conversation/instruction records, but this source is format text"
    )
    with pytest.raises(UsageError, match="no data sources configured"):
        build(tmp_path, [])


def test_real_encoder_matches_encode_conversation(tmp_path, tokenizer):
    from danlu.data.encode import encode_conversation
    from danlu.data.readers import SourceStats, read_source
    from danlu.data.templates import get_template

    path = write_jsonl(tmp_path / "d.jsonl", [
        {"instruction": "你是谁？", "output": "我是丹炉助手。"},
        {"instruction": "hi", "input": "there", "output": "hello", "system": "Be brief."},
    ])  # fmt: skip
    args = DataArgs(data=[DataSource(path, format="auto")], preprocessing_num_workers=2)
    train, _, report = build_dataset(args, tokenizer, "sft", 0, keep_source=True)
    got = {r["source"]: (r["input_ids"], r["labels"]) for r in train}
    template = get_template("auto", tokenizer)
    first = next(read_source(DataSource(path), SourceStats(path)))
    want = encode_conversation(first, tokenizer, template, args, "sft")
    assert got[f"{path}:1"] == (want.input_ids, want.labels)
    assert (
        report["kept"] == 2
        and "source" not in build_dataset(args, tokenizer, "sft", 0)[0].column_names
    )


def test_shared_dpo_and_pt(tokenizer):
    dpo = DataArgs(data=[DataSource(str(shared_path("data", "dpo_en_demo.json")), max_samples=20)],
                   preprocessing_num_workers=1, cutoff_len=256)  # fmt: skip
    train, _, report = build_dataset(dpo, tokenizer, "dpo", 0)
    assert set(train.column_names) == {
        "chosen_input_ids",
        "chosen_labels",
        "rejected_input_ids",
        "rejected_labels",
    }
    assert report["kept"] + sum(report["dropped"].values()) == 20
    pt = DataArgs(
        data=[DataSource(str(shared_path("data", "c4_demo.jsonl")))], preprocessing_num_workers=1
    )
    train, _, report = build_dataset(pt, tokenizer, "pt", 0)
    assert len(train) == 300 and train[0]["input_ids"] == train[0]["labels"]
    assert train[0]["input_ids"][-1] == tokenizer.eos_token_id or len(train[0]["input_ids"]) == 1024
