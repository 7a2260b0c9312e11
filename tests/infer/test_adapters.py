"""Every adapter type danlu trains, served: the engine's greedy tokens equal greedy decoding by
full forward passes through the PeftModel (no cache, no `generate`), batched equal single (left padding with prefix/prompt virtual tokens),
the adapter visibly changes the output, and the HTTP server returns exactly the engine's tokens."""

from __future__ import annotations

import pytest
import requests
from tests.infer.helpers import forward_greedy

from danlu.config import ModelArgs
from danlu.infer.engine import Engine, EngineConfig
from danlu.infer.params import GenParams
from danlu.infer.text import token_text

PROMPTS = ["hi", "The quick brown fox jumps over the lazy", "丹炉 trains small models. 你好"]
KINDS = ["lora", "ia3", "prefix", "prompt", "ptuning", "merged"]
GREEDY = GenParams(max_new_tokens=10, temperature=0)


@pytest.fixture(scope="module")
def base_tokens(lively):
    return [lively.generate([lively.encode(t)], GREEDY)[0].tokens for t in PROMPTS]


@pytest.mark.parametrize("kind", KINDS)
def test_adapter_generates_like_peft_batched_and_served(
    kind, adapter_dirs, lively_dir, base_tokens
):
    from danlu.infer.launch import start_server

    folder = adapter_dirs[kind]
    args = (
        ModelArgs(model=str(folder), device="cpu")
        if kind == "merged"
        else ModelArgs(model=str(lively_dir), adapter=str(folder), device="cpu")
    )
    engine = Engine.load(args, name=kind, config=EngineConfig(max_batch_size=8, batch_wait_ms=1))
    try:
        if kind != "merged":
            assert type(engine.model).__name__.startswith("PeftModel")
        prompts = [engine.encode(t) for t in PROMPTS]
        single = [engine.generate([p], GREEDY)[0].tokens for p in prompts]
        assert single == [forward_greedy(engine.model, p, 10) for p in prompts]
        assert [c.tokens for c in engine.generate(prompts, GREEDY)] == single
        assert single != base_tokens  # the adapter is really applied
        with start_server(engine) as srv:
            body = {
                "model": kind,
                "prompt": prompts,
                "max_tokens": 10,
                "temperature": 0,
                "logprobs": 0,
            }
            r = requests.post(srv.base_url + "/completions", json=body, timeout=60)
            assert r.status_code == 200, r.text
            served = [
                c["logprobs"]["tokens"]
                for c in sorted(r.json()["choices"], key=lambda c: c["index"])
            ]
        assert served == [[token_text(engine.tokenizer, t) for t in s] for s in single]
    finally:
        engine.close()


def test_merged_lora_equals_the_lora_adapter(adapter_dirs, lively_dir):
    outs = {}
    for kind in ("lora", "merged"):
        args = (
            ModelArgs(model=str(adapter_dirs[kind]), device="cpu")
            if kind == "merged"
            else ModelArgs(model=str(lively_dir), adapter=str(adapter_dirs[kind]), device="cpu")
        )
        with Engine.load(args) as engine:
            outs[kind] = [
                c.tokens for c in engine.generate([engine.encode(t) for t in PROMPTS], GREEDY)
            ]
    assert outs["lora"] == outs["merged"]


def test_beam_search_with_a_prefix_adapter_is_refused_where_peft_would_drop_it(
    adapter_dirs, lively_dir
):
    from danlu.infer.params import ParamError

    args = ModelArgs(model=str(lively_dir), adapter=str(adapter_dirs["prefix"]), device="cpu")
    with Engine.load(args) as engine:
        prompt = [engine.encode(PROMPTS[0])]
        beams = GenParams(max_new_tokens=4, temperature=0, num_beams=2)
        if engine.runner.cache_key != "cache":  # older transformers: peft's generate works
            assert engine.generate(prompt, beams)[0].tokens
            return
        with pytest.raises(ParamError, match=r"prefix-tuning adapter.*use num_beams=1"):
            engine.generate(prompt, beams)
