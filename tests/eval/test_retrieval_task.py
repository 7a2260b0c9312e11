"""`danlu eval eval_task=[retrieval]`: recall@k and MRR of an index in each retrieval mode, in
the report, without loading a language model; the question file's faults named by line."""

from __future__ import annotations

import json

import pytest
from tests.rag.conftest import TEA, BagEmbedder, write

from danlu.config import load_config
from danlu.eval import evaluate
from danlu.rag import open_store
from danlu.rag.evaluate import first_match, matches, read_questions, score
from danlu.rag.index import build_index
from danlu.utils.errors import UsageError


def test_source_matching_and_scores(tmp_path):
    assert matches("green.md", "docs/green.md#0") and matches("docs/green.md", "docs/green.md#2")
    assert matches("green.md#0", "x/green.md#0") and not matches("green.md#1", "x/green.md#0")
    assert not matches("een.md", "docs/green.md#0")
    q = read_questions(str(write(tmp_path, {"q.jsonl": json.dumps(
        {"question": "q", "source": ["a.md", "b.md"]}) + "\n"}) / "q.jsonl"))[0]  # fmt: skip
    assert first_match(q, ["x/c.md#0", "x/b.md#3", "x/a.md#1"]) == 2
    assert score([1, 2, None, 5], k=4) == {"recall@4": 50.0, "mrr@4": 0.375, "questions": 4}


def test_bad_question_files_name_the_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a", "source": "x.md"}\n{"question": "b"}\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"q\.jsonl:2: a retrieval record needs a 'source'"):
        read_questions(str(path))


def test_retrieval_task_in_the_report(tmp_path, monkeypatch):
    bag = BagEmbedder()
    monkeypatch.setattr("danlu.rag.embed.Embedder", lambda *a, **k: bag)
    docs = write(tmp_path / "docs", TEA)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"question": "green tea water temperature", "source": "green.md"},
        {"question": "boiling water black tea", "source": "black.md"},
        {"question": "乌龙茶用多少度的水", "source": "oolong.txt"},
    ]), encoding="utf-8")  # fmt: skip
    overrides = [f"rag_docs=[{str(docs)!r}]", f"rag_index={str(tmp_path / 'ix')!r}", "top_k=2",
                 "eval_task=[retrieval]", f"retrieval_data={questions}",
                 f"eval_output_dir={tmp_path / 'out'}", "model=/nonexistent"]  # fmt: skip
    cfg = load_config(None, overrides)
    store = open_store(cfg, create=True)
    build_index(cfg, bag, store, lambda _: None)
    store.close()
    report = evaluate(cfg, log=lambda _: None)  # model=/nonexistent: never loaded
    results = report["tasks"]["retrieval"]["results"]
    assert set(results) == {"hybrid", "dense", "bm25"}
    assert results["hybrid"]["recall@2"] == 100.0 and results["hybrid"]["questions"] == 3
    assert results["bm25"]["recall@2"] == 100.0
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "| hybrid | 100.00 |" in md and "recall@2 %" in md
