"""The engine: exact greedy output, batching equivalence, continuous joins, stops, streaming,
seeds, n, logprobs/echo, cancellation, beam search and limits."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from tests.infer.helpers import (
    PARROT_QUESTION,
    PARROT_REPLY,
    PARROT_STORY,
    STORY_PROMPT,
    hf_greedy,
)

from danlu.infer.engine import PromptTooLong
from danlu.infer.params import GenParams, ParamError

GREEDY = GenParams(max_new_tokens=40, temperature=0)
PROMPTS = [
    "hi",
    "The quick brown fox jumps over the lazy",
    "丹炉 trains small models. 你好",
    "1 2 3",
]


def test_parrot_says_its_lines_exactly(parrot):
    reply = parrot.chat([{"role": "user", "content": PARROT_QUESTION}], GREEDY)
    assert reply.text == PARROT_REPLY
    assert reply.finish_reason == "stop"
    assert reply.tokens[-1] == parrot.tokenizer.convert_tokens_to_ids("<|im_end|>")
    story = parrot.generate([parrot.encode(STORY_PROMPT)], GREEDY)[0]
    assert story.text == PARROT_STORY


def test_greedy_matches_transformers_generate(lively):
    for text in PROMPTS:
        prompt = lively.encode(text)
        got = lively.generate([prompt], GenParams(max_new_tokens=12, temperature=0))[0]
        assert got.tokens == hf_greedy(lively.model, prompt, 12)


def test_batched_equals_unbatched(lively):
    params = GenParams(max_new_tokens=16, temperature=0)
    prompts = [lively.encode(t) for t in PROMPTS]
    single = [lively.generate([p], params)[0].tokens for p in prompts]
    batched = [c.tokens for c in lively.generate(prompts, params)]
    assert batched == single
    assert len({len(p) for p in prompts}) > 1  # the batch really was left-padded
    assert len({tuple(t) for t in single}) == len(single)


def test_request_joining_a_running_batch_gets_its_own_answer(lively):
    """Continuous batching: a request that arrives mid-flight is merged into the running cache
    (padded on the left) and still produces exactly what it produces alone."""
    long_p, short_p = lively.encode(PROMPTS[1]), lively.encode(PROMPTS[0])
    params = GenParams(max_new_tokens=60, temperature=0, ignore_eos=True)
    alone_long = lively.generate([long_p], params)[0].tokens
    alone_short = lively.generate([short_p], params.with_(max_new_tokens=10))[0].tokens
    first_token = threading.Event()
    results = {}

    def sink(out):
        results.setdefault("long", []).extend(out.tokens)
        first_token.set()

    req = lively.submit([long_p], params, sink)
    assert first_token.wait(10)
    steps_before = lively.scheduler.stats["prefills"]
    results["short"] = lively.generate([short_p], params.with_(max_new_tokens=10))[0].tokens
    while not req.cancelled.is_set() and len(results["long"]) < 60:
        time.sleep(0.01)
    assert results["short"] == alone_short
    assert results["long"] == alone_long
    assert lively.scheduler.stats["prefills"] == steps_before + 1
    assert lively.scheduler.stats["max_rows"] >= 2


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        (["Hello"], "丹炉炼丹，你好世界！🔥 "),
        (["世界", "炼"], "丹炉"),  # the earliest match wins, whichever stop it is
        (["🔥"], "丹炉炼丹，你好世界！"),  # a stop made of several tokens, split mid-character
        (["nowhere"], PARROT_REPLY),
    ],
)
def test_stop_strings_are_trimmed(parrot, stop, expected):
    params = GREEDY.with_(stop=tuple(stop))
    reply = parrot.chat([{"role": "user", "content": PARROT_QUESTION}], params)
    assert reply.text == expected
    assert reply.finish_reason == "stop"
    streamed = "".join(
        o.text
        for o in parrot.stream(
            parrot.chat_prompt([{"role": "user", "content": PARROT_QUESTION}]),
            params,
            extra_eos=parrot.chat_eos,
        )
    )
    assert streamed == expected


def test_streaming_never_splits_a_character(parrot):
    prompt = parrot.chat_prompt([{"role": "user", "content": PARROT_QUESTION}])
    events = list(parrot.stream(prompt, GREEDY, extra_eos=parrot.chat_eos))
    pieces = [e.text for e in events if e.text]
    assert "".join(pieces) == PARROT_REPLY
    assert all("\ufffd" not in p for p in pieces)
    tokens = [t for e in events for t in e.tokens]
    # the reply really has characters spread over several tokens, held back until whole
    assert len(tokens) > len(pieces)
    assert any(
        len(parrot.tokenizer.decode([t])) and "\ufffd" in parrot.tokenizer.decode([t])
        for t in tokens
    )
    assert events[-1].finish_reason == "stop"


def test_length_limit_drops_a_half_character(parrot):
    prompt = parrot.chat_prompt([{"role": "user", "content": PARROT_QUESTION}])
    full = parrot.generate([prompt], GREEDY, extra_eos=parrot.chat_eos)[0]
    texts = []
    for n in range(1, 8):
        out = parrot.generate([prompt], GREEDY.with_(max_new_tokens=n), extra_eos=parrot.chat_eos)[
            0
        ]
        assert out.finish_reason == "length"
        assert out.tokens == full.tokens[:n]
        assert "\ufffd" not in out.text and PARROT_REPLY.startswith(out.text)
        texts.append(out.text)
    assert texts[-1] and texts != sorted(set(texts))  # some token counts end mid-character


def test_seeded_sampling_is_reproducible_and_batch_independent(lively):
    prompt = lively.encode(PROMPTS[2])
    params = GenParams(max_new_tokens=12, temperature=1.0, seed=1234)
    a = lively.generate([prompt], params, n=3)
    b = lively.generate([prompt, lively.encode(PROMPTS[1])], params, n=3)[:3]
    assert [c.tokens for c in a] == [c.tokens for c in b]
    assert len({tuple(c.tokens) for c in a}) == 3  # the n choices differ
    other = lively.generate([prompt], params.with_(seed=99))[0]
    assert other.tokens != a[0].tokens


def test_top_k_1_and_tiny_top_p_are_greedy(lively):
    prompt = lively.encode(PROMPTS[1])
    greedy = lively.generate([prompt], GenParams(max_new_tokens=10, temperature=0))[0].tokens
    for params in (
        GenParams(max_new_tokens=10, temperature=1.5, top_k=1),
        GenParams(max_new_tokens=10, temperature=1.5, top_p=1e-6),
    ):
        assert lively.generate([prompt], params)[0].tokens == greedy


def test_repetition_penalty_matches_transformers(lively):
    prompt = lively.encode(PROMPTS[3])
    got = lively.generate(
        [prompt], GenParams(max_new_tokens=12, temperature=0, repetition_penalty=1.3)
    )[0]
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        ref = lively.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=False,
            repetition_penalty=1.3,
            pad_token_id=2,
        )
    assert got.tokens == ref[0, len(prompt) :].tolist()[: len(got.tokens)]


def test_logprobs_and_echo_match_a_forward_pass(lively):
    prompt = lively.encode(PROMPTS[1])
    got = lively.generate(
        [prompt], GenParams(max_new_tokens=3, temperature=0, logprobs=2), echo=True
    )[0]
    seq = torch.tensor([prompt + got.tokens[:-1]])
    with torch.inference_mode():
        lp = torch.log_softmax(lively.model(seq).logits[0].float(), dim=-1)
    assert got.prompt_logprobs[0] is None and len(got.prompt_logprobs) == len(prompt)
    for i, entry in enumerate(got.prompt_logprobs[1:], start=1):
        assert entry.token == prompt[i]
        assert entry.logprob == pytest.approx(lp[i - 1, prompt[i]].item(), abs=1e-4)
        assert [t for t, _ in entry.top] == lp[i - 1].topk(2).indices.tolist()
    for j, entry in enumerate(got.logprobs):
        row = lp[len(prompt) - 1 + j]
        assert entry.token == got.tokens[j] == int(row.argmax())
        assert entry.logprob == pytest.approx(row.max().item(), abs=1e-4)


def test_echo_logprobs_are_chunked_for_long_prompts(lively, monkeypatch):
    from danlu.infer import runner

    prompt = lively.encode(" ".join(["furnace"] * 60))
    whole = lively.generate(
        [prompt], GenParams(max_new_tokens=0, logprobs=0, temperature=0), echo=True
    )[0]
    monkeypatch.setattr(runner, "ECHO_LOGIT_TOKENS", 16)  # 16-column chunks
    chunked = lively.generate(
        [prompt], GenParams(max_new_tokens=0, logprobs=0, temperature=0), echo=True
    )[0]
    assert whole.tokens == [] and whole.finish_reason == "length"
    got = [e.logprob for e in chunked.prompt_logprobs[1:]]
    assert got == pytest.approx([e.logprob for e in whole.prompt_logprobs[1:]], abs=1e-4)


def test_cancel_frees_the_row_and_others_continue(lively):
    params = GenParams(max_new_tokens=200, temperature=0, ignore_eos=True)
    started = threading.Event()
    events = []
    doomed = lively.submit(
        [lively.encode(PROMPTS[0])], params, lambda o: (events.append(o), started.set())
    )
    assert started.wait(10)
    other = lively.generate(
        [lively.encode(PROMPTS[1])], GenParams(max_new_tokens=5, temperature=0)
    )[0]
    doomed.cancel()
    deadline = time.monotonic() + 10
    while events[-1].finish_reason is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events[-1].finish_reason == "cancelled"
    assert sum(len(e.tokens) for e in events) < 200
    assert lively.scheduler.load == (0, 0)
    assert len(other.tokens) == 5


def test_token_id_prompts_and_limits(lively):
    prompt = lively.encode(PROMPTS[1])
    assert (
        lively.generate([prompt], GREEDY)[0].tokens
        == lively.generate([list(prompt)], GREEDY)[0].tokens
    )
    with pytest.raises(
        PromptTooLong,
        match=r"maximum context length is 256 tokens\. However, you requested 296 tokens \(256 in the messages, 40 in the completion\)",
    ):
        lively.generate([[5] * 256], GREEDY)
    with pytest.raises(ParamError, match="token id 999999 is outside the vocabulary"):
        lively.generate([[1, 999999]], GREEDY)
    with pytest.raises(ParamError, match="prompt is empty"):
        lively.generate([[]], GREEDY)


def test_generation_stops_at_the_context_end(lively):
    from danlu.infer.engine import Engine, EngineConfig

    engine = Engine(lively.model, lively.tokenizer, config=EngineConfig(max_model_len=20))
    try:
        prompt = lively.encode(PROMPTS[1])
        engine.check([prompt], GenParams(max_new_tokens=20 - len(prompt)))
        out = engine.generate(
            [prompt], GenParams(max_new_tokens=20 - len(prompt), temperature=0, ignore_eos=True)
        )[0]
        assert len(prompt) + len(out.tokens) == 20 and out.finish_reason == "length"
    finally:
        engine.close()


def test_beam_search_matches_transformers(lively):
    prompt = lively.encode(PROMPTS[1])
    got = lively.generate([prompt], GenParams(max_new_tokens=8, temperature=0, num_beams=3))[0]
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        ref = lively.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=8,
            num_beams=3,
            do_sample=False,
            early_stopping=True,
            pad_token_id=2,
        )
    expected = ref[0, len(prompt) :].tolist()
    assert got.tokens == expected[: len(got.tokens)] and got.tokens


def test_engine_survives_a_failing_step(lively, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated out of memory")

    monkeypatch.setattr(lively.runner, "prefill", boom)
    out = lively.generate([lively.encode("hi")], GREEDY)[0]
    assert out.finish_reason == "error"
    monkeypatch.undo()
    assert lively.generate([lively.encode("hi")], GenParams(max_new_tokens=3, temperature=0))[
        0
    ].tokens
