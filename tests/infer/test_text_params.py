"""Pure pieces: incremental detokenising, stop strings, token texts, parameter validation,
per-row sampling filters."""

from __future__ import annotations

import pytest
import torch

from danlu.infer.params import GenParams, ParamError
from danlu.infer.sampling import RowState, _filter, choose, make_generator
from danlu.infer.text import Detokenizer, StopChecker, token_bytes, token_text

TEXT = "丹炉炼丹，你好世界！🔥 Hello world. Ünïcödé ok"


def test_detokenizer_deltas_are_whole_characters_and_concatenate(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    detok = Detokenizer(tokenizer, context=tokenizer.encode("User says:", add_special_tokens=False))
    deltas = [detok.add(t) for t in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == TEXT
    assert all("\ufffd" not in d for d in deltas)
    assert deltas.count("") > 3  # tokens that were only part of a character waited


def test_detokenizer_flush_reports_a_truly_broken_tail(tokenizer):
    ids = tokenizer.encode("丹", add_special_tokens=False)
    assert len(ids) > 1
    detok = Detokenizer(tokenizer)
    assert [detok.add(t) for t in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.flush() == "\ufffd"


@pytest.mark.parametrize(
    ("stops", "deltas", "emitted", "hit"),
    [
        (["END"], ["abc E", "N", "D tail"], ["abc ", "", ""], True),
        (["END"], ["abc E", "Nx", " more"], ["abc ", "ENx", " more"], False),
        (["世界", "丹"], ["你好世", "界丹"], ["你好", ""], True),
        (["xyz", "b"], ["axyzb"], ["a"], True),  # earliest match wins
        ([], ["free ", "text"], ["free ", "text"], False),
    ],
)
def test_stop_checker(stops, deltas, emitted, hit):
    checker = StopChecker(stops)
    got, stopped = [], False
    for d in deltas:
        out, stopped = checker.feed(d)
        got.append(out)
        if stopped:
            break
    assert got == emitted[: len(got)] and stopped == hit
    if not hit:
        assert "".join(got) + checker.flush() == "".join(deltas)


def test_token_texts_follow_openai(tokenizer):
    hello = tokenizer.encode(" Hello", add_special_tokens=False)[0]
    assert token_text(tokenizer, hello) == " Hello" and token_bytes(tokenizer, hello) == b" Hello"
    partial = tokenizer.encode("丹", add_special_tokens=False)[0]
    assert token_text(tokenizer, partial).startswith("bytes:\\x")
    whole = b"".join(
        token_bytes(tokenizer, t) for t in tokenizer.encode("丹炉🔥", add_special_tokens=False)
    )
    assert whole.decode("utf-8") == "丹炉🔥"
    assert token_text(tokenizer, tokenizer.eos_token_id) == "<|im_end|>"


@pytest.mark.parametrize(
    ("kwargs", "param", "message"),
    [
        ({"temperature": -0.1}, "temperature", "temperature must be in [0, 2], got -0.1"),
        ({"temperature": float("nan")}, "temperature", "temperature must be a number, got nan"),
        ({"top_p": 0}, "top_p", "top_p must be in (0, 1], got 0"),
        ({"top_p": 1.5}, "top_p", "top_p must be in (0, 1], got 1.5"),
        ({"top_k": -2}, "top_k", "top_k must be at least -1, got -2"),
        ({"max_new_tokens": -1}, "max_new_tokens", "max_new_tokens must be at least 0, got -1"),
        ({"max_new_tokens": 2.5}, "max_new_tokens", "max_new_tokens must be an integer, got 2.5"),
        (
            {"repetition_penalty": 0},
            "repetition_penalty",
            "repetition_penalty must be in (0, 10], got 0",
        ),
        ({"stop": ("a", "b", "c", "d", "e")}, "stop", "stop: at most 4 sequences, got 5"),
        ({"stop": ("",)}, "stop", "stop: every stop sequence must be a non-empty string"),
        (
            {"num_beams": 2, "temperature": 1.0},
            "num_beams",
            "num_beams > 1 is beam search: set temperature 0",
        ),
        ({"logprobs": 21}, "logprobs", "logprobs must be between 0 and 20, got 21"),
        ({"seed": True}, "seed", "seed must be an integer, got True"),
    ],
)
def test_param_validation_names_the_parameter(kwargs, param, message):
    with pytest.raises(ParamError) as e:
        GenParams(**kwargs)
    assert e.value.param == param and str(e.value) == message


def test_sampling_flags():
    assert GenParams(temperature=0).sampling is False
    assert GenParams(temperature=0.7).sampling is True
    assert GenParams(temperature=0.7, do_sample=False).sampling is False
    assert GenParams(temperature=0, num_beams=3).sampling is False


def _row(**kw) -> RowState:
    params = GenParams(**kw)
    return RowState(params, prompt=[], generator=make_generator(params.seed, "cpu"))


def test_filters_per_row():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]] * 3)
    rows = [_row(top_k=2), _row(top_p=0.5), _row(min_p=0.3)]
    out = _filter(logits.clone(), rows)
    assert torch.isinf(out[0, 2:]).all() and torch.isfinite(out[0, :2]).all()
    # p(4.0) = 0.64 >= 0.5: the nucleus is the top token alone
    assert torch.isfinite(out[1, 0]) and torch.isinf(out[1, 1:]).all()
    # min_p 0.3: keep tokens with p >= 0.3 * p_max (0.64*0.3 = 0.19): 0.64 and 0.24 stay
    assert torch.isfinite(out[2, :2]).all() and torch.isinf(out[2, 2:]).all()


def test_mixed_batch_choice_and_seeds():
    logits = torch.randn(3, 50)
    rows = [
        _row(temperature=0),
        _row(temperature=1.0, seed=5),
        _row(temperature=1.0, seed=5, logprobs=3),
    ]
    tokens, lps = choose(logits.clone(), rows)
    assert tokens[0] == int(logits[0].argmax())
    assert lps[0] is None and lps[2] is not None and len(lps[2].top) == 3
    again, _ = choose(logits[1:2].clone(), [_row(temperature=1.0, seed=5)])
    assert again[0] == tokens[1]
    assert lps[2].logprob == pytest.approx(torch.log_softmax(logits[2], -1)[tokens[2]].item())


def test_presence_and_frequency_penalties_follow_openai():
    logits = torch.zeros(1, 5)
    row = _row(temperature=0, presence_penalty=1.0, frequency_penalty=0.5)
    for t in (1, 1, 2):
        row.record(t)
    from danlu.infer.sampling import _penalise

    _penalise(logits, [row])
    assert logits[0].tolist() == [0.0, -2.0, -1.5, 0.0, 0.0]
