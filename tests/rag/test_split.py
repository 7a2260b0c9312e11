"""Chunks end at sentence ends in Chinese and English, are sized in tokens, overlap by whole
sentences, carry their heading path, and a sentence longer than a chunk is cut at clauses."""

from __future__ import annotations

from danlu.rag.loaders import Section
from danlu.rag.split import Chunk, sentences, split


def words(texts):
    """A stand-in tokenizer: one token per word or CJK character."""
    out = []
    for t in texts:
        n = 0
        for piece in t.split():
            cjk = sum("\u3400" <= c <= "\u9fff" for c in piece)
            n += cjk + (1 if len(piece) > cjk else 0)
        out.append(n)
    return out


def test_sentence_ends_in_both_languages():
    text = "绿茶用八十度的水。红茶呢？用沸水！“好的。”Mr. Smith said: brew it. Is it done? Yes!\nNext line"
    assert sentences(text) == [
        "绿茶用八十度的水。",
        "红茶呢？",
        "用沸水！",
        "“好的。”",
        "Mr.",
        "Smith said: brew it.",
        "Is it done?",
        "Yes!",
        "Next line",
    ]


def test_chunks_pack_whole_sentences_with_overlap():
    text = " ".join(f"Sentence {i} has five words." for i in range(6))  # 5 tokens each
    chunks = split([Section((), text)], words, size=12, overlap=5)
    assert [c.text for c in chunks] == [
        "Sentence 0 has five words. Sentence 1 has five words.",
        "Sentence 1 has five words. Sentence 2 has five words.",
        "Sentence 2 has five words. Sentence 3 has five words.",
        "Sentence 3 has five words. Sentence 4 has five words.",
        "Sentence 4 has five words. Sentence 5 has five words.",
    ]
    assert all(words([c.text])[0] <= 12 for c in chunks)


def test_chinese_joins_without_spaces_and_headings_travel():
    text = "绿茶用八十度的水。冲泡两分钟。红茶用沸水。"
    chunks = split([Section(("冲泡", "绿茶"), text)], words, size=18, overlap=0)
    # the heading path "冲泡 > 绿茶" costs 5 tokens + 1 for its line: 12 left; the sentences
    # are 9, 6 and 6 tokens (each CJK character, and the 。)
    assert [c.text for c in chunks] == ["绿茶用八十度的水。", "冲泡两分钟。红茶用沸水。"]
    assert chunks[0].embedded_text() == "冲泡 > 绿茶\n绿茶用八十度的水。"


def test_a_long_sentence_is_cut_at_clauses_then_by_length():
    long = "，".join(["一二三四五六"] * 4) + "。"  # 4 clauses of 6-7 tokens
    chunks = split([Section((), long)], words, size=16, overlap=0)
    assert [c.text for c in chunks] == [
        "一二三四五六，一二三四五六，",
        "一二三四五六，一二三四五六。",
    ]
    solid = " ".join(["word"] * 40)
    pieces = split([Section((), solid)], words, size=16, overlap=0)
    assert all(words([c.text])[0] <= 16 for c in pieces)
    assert " ".join(c.text for c in pieces).split() == solid.split()  # nothing lost


def test_parent_child_chunks_answer_with_their_parent():
    text = " ".join(f"Sentence {i} has five words." for i in range(8))
    chunks = split([Section(("H",), text)], words, size=12, overlap=0, parent_size=24)
    parents = sorted({c.parent for c in chunks})
    assert len(parents) == 2
    assert all(c.text in c.parent for c in chunks)
    assert next(c.text for c in chunks if c.parent == parents[0]).startswith("Sentence 0")
    assert isinstance(chunks[0], Chunk) and chunks[0].headings == ("H",)
