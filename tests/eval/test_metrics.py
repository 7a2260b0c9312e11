"""BLEU-4 / ROUGE on hand-computed golden examples, and against the reference implementations."""

from __future__ import annotations

import math

import pytest

from danlu.eval.metrics import lcs_length, score_sample, words

EN_REF, EN_HYP = "the cat sat on the mat", "the cat is on the mat"
ZH_REF, ZH_HYP = "我喜欢吃苹果", "我喜欢吃香蕉"


def test_words_segments_chinese_and_splits_other_text():
    assert words("Hello, world! 你好世界") == ["Hello", ",", "world", "!", "你好", "世界"]
    assert words(ZH_REF) == ["我", "喜欢", "吃", "苹果"]
    assert words(ZH_HYP) == ["我", "喜欢", "吃", "香蕉"]
    assert words("  \n ") == []


def test_english_golden_standard():
    # hyp/ref: 6 words each. 1-grams: 5 shared (the x2, cat, on, mat). 2-grams: the cat, on the,
    # the mat = 3 of 5. 3-grams: on the mat = 1 of 4. 4-grams: 0 of 3 -> method3: 1/(2 * 3).
    # Same length: brevity penalty 1. LCS: the cat on the mat = 5.
    s = score_sample(EN_HYP, EN_REF)
    assert math.isclose(s["bleu-4"], 100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25, rel_tol=1e-12)
    assert math.isclose(s["bleu-4"], 37.99178428257963, rel_tol=1e-12)
    assert math.isclose(s["rouge-1"], 100 * 5 / 6, rel_tol=1e-12)
    assert math.isclose(s["rouge-2"], 60.0, rel_tol=1e-12)
    assert math.isclose(s["rouge-l"], 100 * 5 / 6, rel_tol=1e-12)


def test_chinese_golden_standard():
    # words: 我 喜欢 吃 苹果 / 我 喜欢 吃 香蕉. p1 3/4, p2 2/3, p3 1/2, p4 0/1 -> 1/2.
    s = score_sample(ZH_HYP, ZH_REF)
    assert math.isclose(s["bleu-4"], 100 * (3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25, rel_tol=1e-12)
    assert math.isclose(s["rouge-1"], 75.0, rel_tol=1e-12)
    assert math.isclose(s["rouge-2"], 100 * 2 / 3, rel_tol=1e-12)
    assert math.isclose(s["rouge-l"], 75.0, rel_tol=1e-12)


def test_chinese_golden_chatglm_style():
    # BLEU over the 6 characters: p1 4/6, p2 3/5, p3 2/4, p4 1/3. ROUGE: the rouge-chinese F1
    # with its 1e-8 in the denominator: 2 * p * r / (p + r + 1e-8).
    s = score_sample(ZH_HYP, ZH_REF, "chatglm")
    assert math.isclose(s["bleu-4"], 100 * (4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, rel_tol=1e-12)
    assert math.isclose(s["rouge-1"], 100 * 2 * 0.75 * 0.75 / (1.5 + 1e-8), rel_tol=1e-12)
    assert math.isclose(s["rouge-2"], 100 * 2 * (2 / 3) ** 2 / (4 / 3 + 1e-8), rel_tol=1e-12)


def test_repeats_clipped_in_standard_counted_once_in_chatglm():
    # hyp: the the the cat (4 words), ref: the cat. Clipped: overlap 2 -> P 2/4, R 2/2 -> F 2/3.
    # Unique n-grams (rouge-chinese): {the, cat} vs {the, cat} -> F ~ 1.
    assert math.isclose(score_sample("the the the cat", "the cat")["rouge-1"], 100 * 2 / 3)
    assert math.isclose(
        score_sample("the the the cat", "the cat", "chatglm")["rouge-1"], 100 * 2 / (2 + 1e-8)
    )


def test_empty_prediction_scores_zero():
    assert score_sample("", EN_REF) == {
        "bleu-4": 0.0,
        "rouge-1": 0.0,
        "rouge-2": 0.0,
        "rouge-l": 0.0,
    }
    assert score_sample("   ", ZH_REF, "chatglm")["rouge-l"] == 0.0


def test_lcs():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert lcs_length([], ["a"]) == 0


PAIRS = [
    (EN_HYP, EN_REF),
    (ZH_HYP, ZH_REF),
    (
        "For 300 ml of dark tea use 6 g of leaf at 100 °C.",
        "For 300 ml of dark tea (Fu brick): use 6.0 g of leaf and water at 100 °C.",
    ),
    (
        "我是丹炉助手，可以回答问题。",
        "我是丹炉助手，一个用丹炉训练的小型人工智能助手，可以回答问题，也能给出泡茶建议。",
    ),
    ("好 好 好 学习 学习", "好好学习，天天向上"),
]


@pytest.mark.parametrize(("hyp", "ref"), PAIRS)
def test_standard_equals_nltk_and_rouge_score(hyp, ref):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_score.rouge_scorer import RougeScorer

    class Words:
        def tokenize(self, text):
            return words(text)

    s = score_sample(hyp, ref)
    bleu = sentence_bleu([words(ref)], words(hyp), smoothing_function=SmoothingFunction().method3)
    assert s["bleu-4"] == pytest.approx(100 * bleu, abs=1e-12)
    ref_scores = RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=Words()).score(ref, hyp)
    for ours, theirs in (("rouge-1", "rouge1"), ("rouge-2", "rouge2"), ("rouge-l", "rougeL")):
        assert s[ours] == pytest.approx(100 * ref_scores[theirs].fmeasure, abs=1e-12)


@pytest.mark.parametrize(("hyp", "ref"), PAIRS)
def test_chatglm_style_equals_chatglm_script(hyp, ref):
    """The exact code of ChatGLM's ptuning/main.py compute_metrics (and LLaMA-Factory's)."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    result = Rouge().get_scores(" ".join(jieba.cut(hyp)), " ".join(jieba.cut(ref)))[0]
    bleu = sentence_bleu([list(ref)], list(hyp), smoothing_function=SmoothingFunction().method3)
    s = score_sample(hyp, ref, "chatglm")
    assert s["bleu-4"] == pytest.approx(100 * bleu, abs=1e-12)
    for key in ("rouge-1", "rouge-2", "rouge-l"):
        assert s[key] == pytest.approx(100 * result[key]["f"], abs=1e-9)
