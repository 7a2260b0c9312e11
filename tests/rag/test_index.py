"""The index: incremental re-index counts, vectors reused by content, settings never mixed, a
crash mid-index leaving the previous index whole, derived files rebuilt when missing."""

from __future__ import annotations

import pytest
from tests.rag.conftest import TEA, write

from danlu.rag import open_store
from danlu.rag.index import build_index
from danlu.rag.retrieve import Retriever
from danlu.utils.errors import UsageError


def _index(cfg, bag):
    store = open_store(cfg, create=True)
    try:
        return build_index(cfg, bag, store, lambda _: None)
    finally:
        store.close()


def _search(cfg, bag, question, k=3):
    store = open_store(cfg, create=False)
    try:
        return Retriever(cfg, store, bag).search(question, k)
    finally:
        store.close()


def test_incremental_reindex_counts_and_reuses_vectors(tmp_path, bag, rag_cfg):
    docs = write(tmp_path / "docs", TEA)
    cfg = rag_cfg([docs])
    first = _index(cfg, bag)
    assert (first.added, first.updated, first.removed, first.unchanged) == (3, 0, 0, 0)
    assert first.chunks == first.embedded == 3
    (docs / "black.md").unlink()
    (docs / "green.md").write_text(
        TEA["green.md"] + "\n## Cold brew\nSteep overnight in the fridge.\n"
    )
    (docs / "white.txt").write_text("White tea: 85 °C.", encoding="utf-8")
    bag.embedded.clear()
    second = _index(cfg, bag)
    assert (second.added, second.updated, second.removed, second.unchanged) == (1, 1, 1, 1)
    # green.md's first section is unchanged text: its vector is reused, not re-embedded
    assert sorted(bag.embedded) == sorted(["Green tea > Cold brew\nSteep overnight in the fridge.",
                                           "White tea: 85 °C."])  # fmt: skip
    assert second.chunks == 4 and second.embedded == 2
    assert "removed" in second.summary() and "1 removed" in second.summary()
    third = _index(cfg, bag)
    assert (third.added, third.updated, third.removed, third.unchanged, third.embedded) == (
        0,
        0,
        0,
        3,
        0,
    )


def test_hybrid_finds_chinese_through_bm25_and_english_through_both(tmp_path, bag, rag_cfg):
    cfg = rag_cfg([write(tmp_path / "docs", TEA)])
    _index(cfg, bag)
    top = _search(cfg, bag, "How hot should the water be for green tea?")[0]
    assert top.source.endswith("green.md#0") and top.headings == ("Green tea",)
    assert 0 < top.score <= 1  # the cosine of the dense match
    zh = _search(cfg, bag, "乌龙茶用多少度的水？")[0]
    assert zh.source.endswith("oolong.txt#0")
    bm25 = rag_cfg([tmp_path / "docs"], "retrieval=bm25")
    bag.queries = None  # bm25 alone never embeds the question
    only = _search(bm25, bag, "boiling water black tea")
    assert [p.source.rsplit("/", 1)[1] for p in only] == ["black.md#0", "green.md#0"]
    assert only[0].score > only[1].score > 0  # BM25 scores; oolong shares no word: not returned


def test_settings_are_never_mixed(tmp_path, bag, rag_cfg):
    docs = write(tmp_path / "docs", TEA)
    _index(rag_cfg([docs]), bag)
    with pytest.raises(UsageError, match=r"built with chunk_size 200, this run has 100"):
        _index(rag_cfg([docs], "chunk_size=100"), bag)
    bag.fingerprint = "another-model"
    with pytest.raises(
        UsageError, match=r"built with embedding_fingerprint 'bag-1', this run has 'another-model'"
    ):
        _index(rag_cfg([docs]), bag)


def test_a_crash_mid_index_leaves_the_previous_index(tmp_path, bag, rag_cfg):
    docs = write(tmp_path / "docs", TEA)
    cfg = rag_cfg([docs])
    _index(cfg, bag)
    (docs / "green.md").write_text("# Green tea\nSomething else entirely.\n", encoding="utf-8")

    def boom(texts, progress=False):
        raise RuntimeError("killed")

    bag.passages = boom
    with pytest.raises(RuntimeError, match="killed"):
        _index(cfg, bag)
    store = open_store(cfg, create=False)
    try:
        assert store.size() == 3 and len(store.files()) == 3
    finally:
        store.close()
    assert "80 °C" in _search(cfg, bag, "green tea water")[0].text


@pytest.mark.parametrize("store_kind", ["faiss"])
def test_derived_indexes_are_rebuilt_when_missing(tmp_path, bag, rag_cfg):
    cfg = rag_cfg([write(tmp_path / "docs", TEA)])
    _index(cfg, bag)
    for f in (tmp_path / "index").glob("dense-*.faiss"):
        f.unlink()
    assert _search(cfg, bag, "black tea boiling")[0].source.endswith("black.md#0")
    assert list((tmp_path / "index").glob("dense-*.faiss"))


def test_unreadable_files_are_named_and_the_rest_indexed(tmp_path, bag, rag_cfg):
    docs = write(tmp_path / "docs", TEA)
    (docs / "broken.txt").write_bytes(b"\x00\xff binary")
    report = _index(rag_cfg([docs]), bag)
    assert len(report.skipped) == 1
    source, why = report.skipped[0]
    assert source.endswith("docs/broken.txt") and why == "not UTF-8 or GB18030 text"
    assert report.added == 3 and "1 file(s) skipped" in report.summary()


def test_window_and_empty_corpus_errors(tmp_path, bag, rag_cfg):
    docs = write(tmp_path / "docs", TEA)
    bag.max_tokens = 128
    with pytest.raises(
        UsageError,
        match=r"^chunk_size: 200 tokens is more than the embedding model's window of 128",
    ):
        _index(rag_cfg([docs]), bag)
    empty = write(tmp_path / "empty", {"a.png": "x"})
    with pytest.raises(UsageError, match=r"^rag_docs: no \.txt/\.md/.* file in "):
        _index(rag_cfg([empty], "chunk_size=100"), bag)
    blank = write(tmp_path / "blank", {"a.txt": "   \n"})
    with pytest.raises(UsageError, match=r"^rag_docs: no text found to index in "):
        _index(rag_cfg([blank], f"rag_index={tmp_path / 'other'}", "chunk_size=100"), bag)


@pytest.mark.parametrize("store_kind", ["faiss"])
def test_a_cross_encoder_reorders_and_scores_the_candidates(tmp_path, bag, rag_cfg):
    """A tiny random cross-encoder (BERT, one label, the default embedder's tokenizer): the
    passages come back in its order, with its scores."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from danlu.rag.embed import resolve

    folder = tmp_path / "reranker"
    tokenizer = AutoTokenizer.from_pretrained(resolve("auto"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, num_labels=1)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cfg = rag_cfg([write(tmp_path / "docs", TEA)], f"reranker={folder}")
    _index(cfg, bag)
    got = _search(cfg, bag, "tea water", k=3)
    want = CrossEncoder(str(folder)).predict([("tea water", p.text) for p in got])
    assert [p.score for p in got] == pytest.approx([float(s) for s in want], abs=1e-5)
    assert [p.score for p in got] == sorted((p.score for p in got), reverse=True)
