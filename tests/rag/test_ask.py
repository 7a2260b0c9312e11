"""Fusion by reciprocal rank, the grounded prompt (numbered passages, the seeds' template for
Chinese questions), and the refusal below score_threshold."""

from __future__ import annotations

import pytest

from danlu.rag.ask import NO_ANSWER, TEMPLATE_EN, citations, ground, load_template
from danlu.rag.retrieve import Passage, fuse
from danlu.utils.errors import UsageError


def test_reciprocal_rank_fusion():
    # a: 1/61 + 1/63, c: 1/61, b: 1/62, x: 1/62 (b seen first)
    assert fuse([["a", "b"], ["c", "x", "a"]], k=60) == ["a", "c", "b", "x"]
    # 1 and 3 tie at 1/61 + 1/63: the first seen stays first
    assert fuse([[1, 2, 3], [3, 4, 1]], k=60) == [1, 3, 2, 4]


PASSAGES = [
    Passage("docs/green.md#0", "Use water at 80 °C.", 0.62, ("Green tea",)),
    Passage("docs/oolong.txt#0", "乌龙茶用九十五度的水。", 0.41),
]


def test_english_question_gets_the_english_template_with_numbered_passages():
    g = ground("How hot for green tea?", PASSAGES, None, 0.0)
    assert g.refusal is None
    assert g.prompt == TEMPLATE_EN.replace(
        "{context}", "[1] Green tea\nUse water at 80 °C.\n\n[2] 乌龙茶用九十五度的水。"
    ).replace("{question}", "How hot for green tea?")
    assert citations(PASSAGES) == ["[1] docs/green.md#0", "[2] docs/oolong.txt#0"]


def test_chinese_question_gets_the_seed_template():
    g = ground("乌龙茶用多少度的水？", PASSAGES, None, 0.0)
    assert g.prompt.startswith("已知信息：\n[1] Green tea\nUse water at 80 °C.")
    assert "根据已知信息无法回答该问题" in g.prompt and g.prompt.endswith(
        "问题是：乌龙茶用多少度的水？"
    )


def test_below_the_threshold_the_answer_is_the_refusal():
    assert ground("How hot?", PASSAGES, None, 0.7).refusal == NO_ANSWER["en"]
    assert ground("多少度？", PASSAGES, None, 0.7).refusal == NO_ANSWER["zh"]
    assert ground("How hot?", [], None, 0.0).refusal == NO_ANSWER["en"]
    assert ground("How hot?", PASSAGES, None, 0.6).refusal is None


def test_own_template_needs_both_slots(tmp_path):
    own = tmp_path / "t.txt"
    own.write_text("Context: {context}\nQ: {question}", encoding="utf-8")
    assert (
        ground("q?", PASSAGES[:1], str(own), 0).prompt
        == "Context: [1] Green tea\nUse water at 80 °C.\nQ: q?"
    )
    with pytest.raises(UsageError, match=r"^rag_template: needs \{question\}"):
        load_template("only {context}", "q")
    with pytest.raises(UsageError, match=r"^question: empty$"):
        ground("  ", PASSAGES, None, 0)
