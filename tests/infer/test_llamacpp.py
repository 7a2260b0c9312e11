"""The llamacpp backend's own behaviour beyond the HTTP contract (which test_server runs on it):
it computes what the native engine computes on the same weights, one prompt's choices fork its
KV stream correctly, more requests than rows queue and all finish, no sequence id leaks, and
what it cannot do is refused in one line."""

from __future__ import annotations

import pytest
from tests.infer.helpers import PARROT_QUESTION, PARROT_REPLY, PARROT_STORY, STORY_PROMPT

from danlu.config import ModelArgs
from danlu.infer.engine import Engine, EngineConfig
from danlu.infer.params import GenParams, ParamError
from danlu.utils.errors import UsageError

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (the gguf extra)")

CHAT = [{"role": "user", "content": PARROT_QUESTION}]


@pytest.fixture(scope="module")
def cpp(parrot_gguf):
    engine = Engine.load(
        ModelArgs(model=str(parrot_gguf()), threads=1),
        name="parrot",
        config=EngineConfig(max_batch_size=4, batch_wait_ms=2, backend="llamacpp"),
    )
    yield engine
    engine.close()


def _all_free(engine) -> bool:
    """Every sequence id is back (the last event reaches the caller just before the scheduler
    drops the finished rows, so wait a moment for it)."""
    import time

    deadline = time.monotonic() + 10
    while sorted(engine.runner.free) != list(range(engine.runner.rows)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_same_tokens_and_logprobs_as_the_native_engine(cpp, parrot):
    assert cpp.context_len == parrot.context_len == 256  # the GGUF's training context
    assert cpp.chat_prompt(CHAT) == parrot.chat_prompt(CHAT)
    greedy = GenParams(max_new_tokens=60, temperature=0)
    assert cpp.chat(CHAT, greedy).tokens == parrot.chat(CHAT, greedy).tokens
    assert cpp.chat(CHAT, greedy).text == PARROT_REPLY
    ids = parrot.encode(STORY_PROMPT + PARROT_STORY)
    scored = GenParams(max_new_tokens=1, temperature=0, logprobs=2)
    ours = cpp.generate([ids], scored, echo=True)[0].prompt_logprobs
    theirs = parrot.generate([ids], scored, echo=True)[0].prompt_logprobs
    assert ours[0] is None and theirs[0] is None and len(ours) == len(theirs) == len(ids)
    for a, b in zip(ours[1:], theirs[1:], strict=True):
        assert a.token == b.token
        assert a.logprob == pytest.approx(b.logprob, abs=0.05)  # f16 weights vs fp32
        assert [t for t, _ in a.top] == [t for t, _ in b.top] or abs(
            a.top[0][1] - a.top[1][1]
        ) < 0.1


def test_choices_of_one_prompt_fork_its_kv_stream(cpp):
    prompt = cpp.encode(STORY_PROMPT)
    hot = GenParams(max_new_tokens=12, temperature=1.5, seed=7)
    forked = [c.tokens for c in cpp.generate([prompt], hot, n=3)]
    alone = [
        cpp.generate([prompt], GenParams(max_new_tokens=12, temperature=1.5, seed=7 + i))[0].tokens
        for i in range(3)
    ]
    assert forked == alone  # choice i is the seed+i sample, from the prompt's own KV state
    assert len({tuple(t) for t in forked}) > 1
    greedy = cpp.generate([prompt], GenParams(max_new_tokens=40, temperature=0), n=2)
    assert [c.text for c in greedy] == [PARROT_STORY, PARROT_STORY]
    assert _all_free(cpp)


def test_more_requests_than_rows_queue_and_all_finish(cpp):
    import queue

    events: queue.Queue = queue.Queue()
    chat = cpp.chat_prompt(CHAT)
    story = cpp.encode(STORY_PROMPT)
    prompts = [chat if i % 2 else story for i in range(10)]
    texts = [""] * 10
    for i, p in enumerate(prompts):
        cpp.submit([p], GenParams(max_new_tokens=60, temperature=0), lambda o, i=i: events.put((i, o)),
                   extra_eos=cpp.chat_eos)  # fmt: skip
    left = 10
    while left:
        i, out = events.get(timeout=60)
        texts[i] += out.text
        left -= out.finish_reason is not None
    assert texts == [PARROT_STORY, PARROT_REPLY] * 5
    assert cpp.scheduler.stats["max_rows"] == 4  # the engine's rows, never more
    assert _all_free(cpp)


def test_what_the_backend_cannot_do_is_refused(cpp, parrot_dir, parrot_gguf, tmp_path):
    with pytest.raises(ParamError, match="beam search is not available with the llamacpp backend"):
        cpp.generate([cpp.encode("x")], GenParams(max_new_tokens=4, num_beams=2, temperature=0))
    llamacpp = EngineConfig(backend="llamacpp")
    with pytest.raises(UsageError, match=r"is not a \.gguf file; make one with `danlu export"):
        Engine.load(ModelArgs(model=str(parrot_dir)), config=llamacpp)
    with pytest.raises(UsageError, match="merge the adapter into one first"):
        Engine.load(ModelArgs(model=str(parrot_gguf()), adapter=str(tmp_path)), config=llamacpp)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(UsageError, match=r"broken\.gguf"):
        Engine.load(ModelArgs(model=str(broken)), config=llamacpp)


def test_a_smaller_context_is_enforced(parrot_gguf):
    config = EngineConfig(max_batch_size=2, max_model_len=64, backend="llamacpp")
    with Engine.load(ModelArgs(model=str(parrot_gguf()), threads=1), config=config) as engine:
        assert engine.context_len == 64
        with pytest.raises(ParamError, match="maximum context length is 64 tokens"):
            engine.generate([[5] * 60], GenParams(max_new_tokens=10))
        prompt = engine.encode(STORY_PROMPT)
        whole = GenParams(max_new_tokens=64 - len(prompt), temperature=0, ignore_eos=True)
        out = engine.generate([prompt], whole)[0]  # fills every KV slot of its stream
        assert out.finish_reason == "length" and len(prompt) + len(out.tokens) == 64


def test_a_prompt_that_starts_like_an_earlier_one_reuses_its_kv_cells(cpp):
    greedy = GenParams(max_new_tokens=60, temperature=0, logprobs=1)
    chat = cpp.chat_prompt(CHAT)
    turn2 = cpp.chat_prompt(
        [
            *CHAT,
            {"role": "assistant", "content": PARROT_REPLY},
            {"role": "user", "content": "再说一遍"},
        ]
    )

    def answer(prompt):
        out = cpp.generate([prompt], greedy, extra_eos=cpp.chat_eos)[0]
        assert _all_free(cpp)
        return out

    cpp.runner.fed.clear()  # forget every kept cell: these answers are computed from scratch
    fresh = answer(chat)
    cpp.runner.fed.clear()
    fresh2 = answer(turn2)
    cpp.runner.fed.clear()
    assert fresh.text == PARROT_REPLY
    answer(chat)
    before = cpp.runner.reused
    again = answer(chat)  # the same prompt: only its last token runs
    assert cpp.runner.reused - before == len(chat) - 1
    before = cpp.runner.reused
    next_turn = answer(turn2)  # the next turn starts with the whole first turn
    assert cpp.runner.reused - before >= len(chat)
    for reused, scratch in ((again, fresh), (next_turn, fresh2)):
        assert reused.tokens == scratch.tokens
        for a, b in zip(reused.logprobs, scratch.logprobs, strict=True):
            # llama.cpp's sums run in another order for a shorter prefill: float noise only
            assert a.logprob == pytest.approx(b.logprob, abs=1e-2)
