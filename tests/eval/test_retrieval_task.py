"""`danlu eval eval_task=[retrieval]`: recall@k and MRR of an index in each retrieval mode, in
the report, without loading a language model; the question file's faults named by line."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_answer_normalising_and_match_scores():
    from danlu.eval.rag_answers import match_scores, normalise

    assert normalise("Brew it at 80 °C [1]. ") == "brewitat80°c"
    assert normalise("８０ °C。") == "80°c"  # full width folds; Chinese punctuation drops
    assert match_scores("80 °C [1].", "80 °C") == {"exact_match": 100.0, "contains": 100.0}
    assert match_scores("Brew at 80 °C [2].", "80 °C") == {"exact_match": 0.0, "contains": 100.0}
    assert match_scores("90 °C", "80 °C") == {"exact_match": 0.0, "contains": 0.0}


def test_bad_reference_answer_names_the_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a", "source": "x.md", "answer": ""}\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"q\.jsonl:1: 'answer' must be a non-empty string"):
        read_questions(str(path))


def _answer_setup(tmp_path, monkeypatch, rows, *extra):
    bag = BagEmbedder()
    monkeypatch.setattr("danlu.rag.embed.Embedder", lambda *a, **k: bag)
    docs = write(tmp_path / "docs", TEA)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                         encoding="utf-8")  # fmt: skip
    overrides = [f"rag_docs=[{str(docs)!r}]", f"rag_index={str(tmp_path / 'ix')!r}", "top_k=2",
                 "eval_task=[retrieval]", f"retrieval_data={questions}",
                 f"eval_output_dir={tmp_path / 'out'}", *extra]  # fmt: skip
    cfg = load_config(None, overrides)
    store = open_store(cfg, create=True)
    build_index(cfg, bag, store, lambda _: None)
    store.close()
    return cfg


ANSWERED = [
    {"question": "green tea water temperature", "source": "green.md", "answer": "80 °C"},
    {"question": "boiling water black tea", "source": "black.md"},  # no answer: retrieval only
    {"question": "乌龙茶用多少度的水", "source": "oolong.txt", "answer": "九十五度"},
]


def test_each_model_answers_from_the_retrieved_passages(tiny_model_dir, tmp_path, monkeypatch):
    """The prompt is the one `rag ask` builds (same passages, same template), the answer is
    the model's greedy continuation of it, and the scores are those of the answer."""
    from danlu.config import ModelArgs
    from danlu.eval.rag_answers import match_scores
    from danlu.infer.engine import Engine, EngineConfig
    from danlu.infer.params import GenParams
    from danlu.rag import open_index
    from danlu.rag.ask import ground

    cfg = _answer_setup(tmp_path, monkeypatch, ANSWERED, f"model={tiny_model_dir}",
                        "eval_max_new_tokens=6", "per_device_eval_batch_size=1")  # fmt: skip
    report = evaluate(cfg, log=lambda _: None, quiet=True)
    (result,) = report["tasks"]["retrieval_answers"]["results"].values()
    assert result["questions"] == 2 and result["refused"] == 0
    rows = [json.loads(x) for x in Path(result["predictions"]).read_text("utf-8").splitlines()]
    assert [r["reference"] for r in rows] == ["80 °C", "九十五度"]
    store, _, retriever = open_index(cfg)
    engine = Engine.load(ModelArgs(model=str(tiny_model_dir), device="cpu"),
                         config=EngineConfig(max_batch_size=1, batch_wait_ms=0))  # fmt: skip
    try:
        for row, record in zip(rows, [ANSWERED[0], ANSWERED[2]], strict=True):
            passages = retriever.search(record["question"])
            grounded = ground(record["question"], passages, None, 0.0)
            assert row["passages"] == [p.source for p in passages]
            assert row["prompt"] == grounded.prompt
            prompt = engine.chat_prompt([{"role": "user", "content": grounded.prompt}])
            stop = set(engine.chat_eos)
            text = "".join(o.text for o in engine.stream(
                prompt, GenParams(max_new_tokens=6, temperature=0.0), extra_eos=stop))  # fmt: skip
            assert row["prediction"] == text.strip()
            assert {k: row[k] for k in ("exact_match", "contains")} == match_scores(
                text.strip(), record["answer"])  # fmt: skip
    finally:
        engine.close()
        store.close()
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## retrieval_answers" in md and "answer contains reference %" in md


def test_refusals_are_scored_without_calling_the_model(tmp_path, monkeypatch):
    """Under score_threshold every question gets the refusal, the model decodes nothing, and a
    refusal is right exactly when the reference is the refusal."""
    rows = [{**ANSWERED[0], "answer": "The documents do not say."}, ANSWERED[2]]
    cfg = _answer_setup(tmp_path, monkeypatch, rows, "score_threshold=1e9")

    class Loaded:
        tokenizer = model = None

    monkeypatch.setattr("danlu.models.load_model", lambda *a, **k: Loaded())
    monkeypatch.setattr("danlu.eval.runner._decode", lambda *a: pytest.fail("model called"))
    report = evaluate(cfg, log=lambda _: None)
    (result,) = report["tasks"]["retrieval_answers"]["results"].values()
    assert result["refused"] == 2 and result["questions"] == 2
    assert result["exact_match"] == 50.0 and result["contains"] == 50.0
    rows = [json.loads(x) for x in Path(result["predictions"]).read_text("utf-8").splitlines()]
    assert [r["prediction"] for r in rows] == [
        "The documents do not say.",
        "根据已知信息无法回答该问题。",
    ]
    assert all(r["refused"] for r in rows)
