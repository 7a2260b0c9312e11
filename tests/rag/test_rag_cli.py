"""`danlu rag index | ask` end to end with the embedded default embedder on our tea sheets:
the counts an index run prints, the passages `--json --no-generate` returns in both languages,
a streamed answer followed by its citations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from danlu.cli import main

pytestmark = pytest.mark.slow  # loads the embedded all-MiniLM-L6-v2 (a few seconds)
DOCS = Path(__file__).resolve().parents[2] / "examples" / "docs"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    root = tmp_path_factory.mktemp("rag")
    docs = root / "docs"
    shutil.copytree(DOCS, docs)
    return root, docs


def test_index_then_reindex_counts(index, capsys):
    root, docs = index
    assert main(["rag", "index", "--docs", str(docs), "--index", str(root / "ix"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 added, 0 updated, 0 removed, 0 unchanged" in out
    assert main(["rag", "index", "--docs", str(docs), "--index", str(root / "ix"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "0 added, 0 updated, 0 removed, 2 unchanged" in out and "(0 embedded)" in out


@pytest.mark.parametrize(
    ("question", "source", "fact"),
    [
        ("How hot should the water be for green tea?", "tea-guide.md", "80 °C"),
        ("乌龙茶要用多少度的水？", "tea-guide-zh.md", "95 °C"),
    ],
)
def test_ask_json_no_generate_finds_the_section(index, capsys, question, source, fact):
    root, _ = index
    main(["rag", "index", "--docs", str(index[1]), "--index", str(root / "ix"), "--quiet"])
    capsys.readouterr()
    assert main(["rag", "ask", "--index", str(root / "ix"), "--json", "--no-generate",
                 "--top-k", "2", question]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["answer"] is None and len(result["passages"]) == 2
    top = result["passages"][0]
    assert top["source"].split("#")[0].endswith(source) and fact in top["text"]
    assert set(top) == {"source", "text", "score", "headings"}


def test_ask_streams_an_answer_and_cites(index, capsys, tiny_model_dir):
    root, docs = index
    main(["rag", "index", "--docs", str(docs), "--index", str(root / "ix"), "--quiet"])
    capsys.readouterr()
    code = main(["rag", "ask", "--index", str(root / "ix"), "--model", str(tiny_model_dir),
                 "--top-k", "2", "rag_max_new_tokens=4", "How should I brew green tea?"])  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("[1] ") and lines[-1].startswith("[2] ")
    assert "tea-guide" in lines[-2]


def test_ask_takes_overrides_anywhere(index, capsys):
    root, docs = index
    main(["rag", "index", "--docs", str(docs), "--index", str(root / "ix"), "--quiet"])
    capsys.readouterr()
    argv = ["rag", "ask", "top_k=1", "What", "about", "storage?", "--json", "--no-generate",
            "--index", str(root / "ix"), "retrieval=bm25"]  # fmt: skip
    assert main(argv) == 0
    passages = json.loads(capsys.readouterr().out)["passages"]
    assert len(passages) == 1 and "sealed tin" in passages[0]["text"]


def test_serve_knowledge_from_the_index(index, capsys):
    import argparse

    from danlu.cli.serve import _knowledge

    root, docs = index
    main(["rag", "index", "--docs", str(docs), "--index", str(root / "ix"), "--quiet"])
    args = argparse.Namespace(rag_index=str(root / "ix"), embedding_model=None, top_k=2)
    knowledge = _knowledge(args)
    prompt, passages, refusal = knowledge.ground("How hot should the water be for green tea?")
    assert refusal is None and len(passages) == 2 and "80 °C" in prompt
    vectors, tokens = knowledge.embed(["green tea", "绿茶"])
    assert len(vectors) == 2 and len(vectors[0]) == 384 and tokens > 0
    assert knowledge.embedding_model == "all-MiniLM-L6-v2"


def test_index_and_ask_on_pgvector(index, capsys, pg_dsn):
    _, docs = index
    keys = ["store=pgvector", f"pg_dsn={pg_dsn}"]
    assert main(["rag", "index", "--docs", str(docs), "--index", "tea_cli", "--quiet", *keys]) == 0
    assert "2 added" in capsys.readouterr().out
    assert main(["rag", "ask", "--index", "tea_cli", "--json", "--no-generate", "--top-k", "1",
                 "乌龙茶要用多少度的水？", *keys]) == 0  # fmt: skip
    top = json.loads(capsys.readouterr().out)["passages"][0]
    assert top["source"].split("#")[0].endswith("tea-guide-zh.md") and "95 °C" in top["text"]
