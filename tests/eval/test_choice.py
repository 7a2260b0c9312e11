"""Multiple choice: exact prompts, and batched letter scoring against a brute-force computation."""

from __future__ import annotations

import pytest

from danlu.eval.choice import (
    Request,
    accuracy,
    build_prompt,
    detect_language,
    encode_request,
    predict,
    score_requests,
)
from danlu.eval.mc_data import Question

Q = Question("  What is 2 + 2? ", ("3", "4", "5", "22"), "B", "elementary_math", "f.jsonl:3",
             ("elementary math", "初等数学"))  # fmt: skip
SHOT = Question("What is 1 + 1?", ("2", "3", "4", "5"), "A", "elementary_math", "dev.jsonl:1",
                ("elementary math", "初等数学"))  # fmt: skip


def test_english_prompt_is_lm_eval_mmlu():
    assert build_prompt(Q, [SHOT], "en") == (
        "The following are multiple choice questions (with answers) about elementary math.\n\n"
        "What is 1 + 1?\nA. 2\nB. 3\nC. 4\nD. 5\nAnswer: A\n\n"
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:"
    )


def test_chinese_prompt_is_ceval():
    assert build_prompt(Q, [SHOT], "zh") == (
        "以下是中国关于初等数学考试的单项选择题，请选出其中的正确答案。\n\n"
        "What is 1 + 1?\nA. 2\nB. 3\nC. 4\nD. 5\n答案：A\n\n"
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\n答案："
    )


def test_language_detection():
    zh = Question("水的沸点是？", ("a", "b", "c", "d"), "A", "s", "x:1")
    assert detect_language([zh, zh, Q]) == "zh"
    assert detect_language([zh, Q]) == "en"


def test_letters_are_single_tokens_for_smollm2(tokenizer):
    """The one-forward path applies to the default model in all three prompt modes."""
    from danlu.data.templates import get_template

    for lang in ("en", "zh"):
        req = encode_request(tokenizer, build_prompt(Q, [], lang), lang)
        assert req.one_token
        assert tokenizer.decode(req.context) == build_prompt(Q, [], lang)
    template = get_template("auto", tokenizer)
    req = encode_request(tokenizer, build_prompt(Q, [], "en"), "en", template)
    assert req.one_token
    user = [{"role": "user", "content": build_prompt(Q, [], "en")}]
    assert tokenizer.decode(req.context) == template.render(tokenizer, user, generation_prompt=True)
    assert [tokenizer.decode(c) for c in req.continuations] == ["A", "B", "C", "D"]
    en = encode_request(tokenizer, build_prompt(Q, [], "en"), "en")
    assert [tokenizer.decode(c) for c in en.continuations] == [" A", " B", " C", " D"]


def brute_force(model, ctx: list[int], cont: list[int]) -> float:
    """log P(cont | ctx): one unbatched forward over ctx + cont, full logits, summed log-softmax."""
    import torch

    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(ctx) - 1 : -1]  # the rows predicting cont
    logp = torch.log_softmax(logits.double(), dim=-1)
    return float(sum(logp[k, t] for k, t in enumerate(cont)))


def questions(n):
    subjects = ["tea", "maths", "physics"]
    return [Question(f"Question {i}: which option is right {'?' * (i % 5)}", (f"a{i}", "bb", "c c", "d"),
                     "ABCD"[i % 4], subjects[i % 3], f"q:{i}") for i in range(n)]  # fmt: skip


def test_scores_equal_brute_force_loglikelihood(tiny):
    model, tok = tiny
    reqs = [
        encode_request(tok, build_prompt(q, [SHOT] * (i % 2), "en"), "en")
        for i, q in enumerate(questions(5))
    ]
    assert all(r.one_token for r in reqs)
    got = score_requests(model, reqs, tok.pad_token_id, batch_size=3)
    for req, scores in zip(reqs, got, strict=True):
        expected = [brute_force(model, req.context, c) for c in req.continuations]
        assert scores == pytest.approx(expected, abs=2e-4)
        assert predict(scores) == predict(expected)


def test_multi_token_continuations_fall_back_to_full_loglikelihood(tiny):
    model, tok = tiny
    ctx = tok("The answer is")["input_ids"]
    conts = [tok(f" option {x} indeed")["input_ids"] for x in "ABCD"]
    reqs = [Request(ctx, conts), encode_request(tok, build_prompt(Q, [], "en"), "en")]
    assert not reqs[0].one_token and reqs[1].one_token
    got = score_requests(model, reqs, tok.pad_token_id, batch_size=2)
    assert got[0] == pytest.approx([brute_force(model, ctx, c) for c in conts], abs=2e-4)
    assert got[1] == pytest.approx(
        [brute_force(model, reqs[1].context, c) for c in reqs[1].continuations], abs=2e-4
    )


def test_batch_size_does_not_change_scores(tiny):
    model, tok = tiny
    reqs = [encode_request(tok, build_prompt(q, [], "en"), "en") for q in questions(6)]
    one = score_requests(model, reqs, tok.pad_token_id, batch_size=1)
    six = score_requests(model, reqs, tok.pad_token_id, batch_size=6)
    for a, b in zip(one, six, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_full_logits_path_equals_logits_to_keep_path(tiny):
    """Models without `logits_to_keep` (remote code, prompt learning) get the same scores."""
    model, tok = tiny
    reqs = [encode_request(tok, build_prompt(q, [], "zh"), "zh") for q in questions(4)]
    fast = score_requests(model, reqs, tok.pad_token_id, batch_size=4)
    model._danlu_keep_ok = False
    try:
        slow = score_requests(model, reqs, tok.pad_token_id, batch_size=4)
    finally:
        del model._danlu_keep_ok
    for a, b in zip(fast, slow, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


def test_predict_takes_first_of_ties():
    assert predict([-1.0, -0.5, -0.5, -2.0]) == "B"
    assert predict([-3.0, -3.0, -3.0, -3.0]) == "A"


def test_accuracy_micro_and_macro():
    qs = questions(6)  # subjects tea, maths, physics x2; answers A B C D A B
    preds = [q.answer for q in qs[:3]] + ["A", "A", "A"]
    acc = accuracy(qs, preds)  # q3 (tea, D) wrong, q4 (maths, A) right, q5 (physics, B) wrong
    assert acc["subjects"]["tea"] == {"correct": 1, "total": 2, "accuracy": 50.0}
    assert acc["subjects"]["maths"] == {"correct": 2, "total": 2, "accuracy": 100.0}
    assert acc["subjects"]["physics"] == {"correct": 1, "total": 2, "accuracy": 50.0}
    assert acc["accuracy_micro"] == pytest.approx(100 * 4 / 6)
    assert acc["accuracy_macro"] == pytest.approx((50 + 100 + 50) / 3)
