"""Models, engines and live servers for the inference tests (all tiny, CPU, built in seconds).

- `lively_dir`: a 2-layer random LLaMA with larger initial weights than `tiny_model_dir`, so
  greedy decoding walks through varied tokens instead of repeating one (batched-vs-single and
  adapter comparisons would prove little on a model that always says the same token).
- `parrot_dir`: the lively model overfitted (~30 steps) to answer the chat "你好" with PARROT_REPLY
  and to continue "Once upon a time" with PARROT_STORY, both full of multi-token characters
  (CJK, an emoji): exact-text, stop-string and streaming tests then know what must come out.
- `chatter_dir`: a model built by hand to say CHATTER_TOKEN forever (never EOS), whatever the
  seed or the transformers release: for tests that must interrupt an answer still running.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.infer.helpers import (
    CALL,
    CHATTER_TOKEN,
    PARROT_QUESTION,
    PARROT_REPLY,
    PARROT_STORY,
    STORY_PROMPT,
    THINK,
    TOOLS,
    WEATHER_Q,
    WHY_Q,
    overfit,
    serve,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models decode far faster on one thread: a 2-thread pool on a shared 2-core box waits
    ~10 ms per op for its second thread (measured: SDPA 12 ms vs 0.04 ms). Speed only; the
    benchmark keeps the real thread settings."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lively(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def lively_dir(tmp_path_factory, tokenizer) -> Path:
    dest = tmp_path_factory.mktemp("lively")
    _lively(tokenizer).save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def parrot_dir(tmp_path_factory, tokenizer) -> Path:

    model = _lively(tokenizer, seed=1)
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": PARROT_QUESTION}], tokenize=False, add_generation_prompt=True
    )
    texts = [chat + PARROT_REPLY + "<|im_end|>", STORY_PROMPT + PARROT_STORY + "<|im_end|>"]
    overfit(model, tokenizer, texts, "parrot")
    dest = tmp_path_factory.mktemp("parrot")
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def chatter_dir(tmp_path_factory, tokenizer) -> Path:
    """Every position's hidden state is the unit vector e0 (embeddings hold only e0, attention
    and MLP outputs are zero), and only CHATTER_TOKEN's output row reads e0: greedy decoding
    picks it at every step. Set by hand, not learned, so no init change can alter it."""
    import torch

    model = _lively(tokenizer)
    model.config.tie_word_embeddings = False
    model.lm_head = torch.nn.Linear(model.config.hidden_size, len(tokenizer), bias=False)
    token = tokenizer.convert_tokens_to_ids(CHATTER_TOKEN)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0
        model.model.norm.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        model.lm_head.weight[token, 0] = 1.0
    dest = tmp_path_factory.mktemp("chatter")
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def caller_dir(tmp_path_factory, tokenizer):
    """The lively model with ChatML (tools rendered Qwen-style) and <think> tokens, overfitted
    to CALL for WEATHER_Q (with TOOLS) and THINK for WHY_Q."""
    from transformers import AutoTokenizer

    from danlu.data.templates_builtin import BUILTIN

    dest = tmp_path_factory.mktemp("caller")
    tokenizer.save_pretrained(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    tok.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tok.chat_template = BUILTIN["chatml"]
    model = _lively(tok, seed=2)
    texts = [
        tok.apply_chat_template([{"role": "user", "content": WEATHER_Q}], tools=TOOLS,
                                tokenize=False, add_generation_prompt=True) + CALL + "<|im_end|>",
        tok.apply_chat_template([{"role": "user", "content": WHY_Q}], tokenize=False,
                                add_generation_prompt=True) + THINK + "<|im_end|>",
    ]  # fmt: skip
    overfit(model, tok, texts, "caller", steps=300)
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def parrot_gguf(tmp_path_factory, parrot_dir):
    """A function returning the parrot exported to an f16 GGUF (made on first call, with
    llama.cpp's converter; skips when the gguf extra is missing)."""
    made: list[Path] = []

    def get() -> Path:
        if not made:
            from danlu.methods.export import export_model
            from danlu.methods.gguf import converter_script
            from danlu.utils.errors import UsageError

            try:
                converter_script()
            except UsageError as exc:
                pytest.skip(str(exc))
            out = tmp_path_factory.mktemp("parrot-gguf") / "out"
            export_model(str(parrot_dir), out)
            made.append(out / "model-f16.gguf")
        return made[0]

    return get


@pytest.fixture(scope="session")
def parrot(parrot_dir):
    """An Engine on the parrot model (shared: tests must not change it)."""
    from danlu.config import ModelArgs
    from danlu.infer.engine import Engine, EngineConfig

    engine = Engine.load(
        ModelArgs(model=str(parrot_dir), device="cpu"),
        name="parrot",
        config=EngineConfig(max_batch_size=8, batch_wait_ms=2),
    )
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def lively(lively_dir):
    from danlu.config import ModelArgs
    from danlu.infer.engine import Engine, EngineConfig

    engine = Engine.load(
        ModelArgs(model=str(lively_dir), device="cpu"),
        name="lively",
        config=EngineConfig(max_batch_size=8, batch_wait_ms=2),
    )
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def server(parrot):
    """A live server on the parrot engine, no API key: `server.url`, `server.base_url`."""
    yield from serve(parrot)


@pytest.fixture(scope="session")
def adapter_dirs(tmp_path_factory, lively_dir) -> dict[str, Path]:
    """One saved adapter per PEFT type danlu trains for serving, on the lively model, with
    weights moved off their no-op initialisation so each visibly changes the output; plus
    'merged': the LoRA merged into a full model folder."""
    import torch
    from peft import (
        IA3Config,
        LoraConfig,
        PrefixTuningConfig,
        PromptEncoderConfig,
        PromptTuningConfig,
        get_peft_model,
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    configs = {
        "lora": LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        ),
        "ia3": IA3Config(
            target_modules=["k_proj", "v_proj", "down_proj"],
            feedforward_modules=["down_proj"],
            task_type="CAUSAL_LM",
        ),
        "prefix": PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
        "prompt": PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
        "ptuning": PromptEncoderConfig(
            num_virtual_tokens=4, encoder_hidden_size=16, task_type="CAUSAL_LM"
        ),
    }
    tokenizer = AutoTokenizer.from_pretrained(lively_dir)
    out: dict[str, Path] = {}
    for i, (kind, config) in enumerate(configs.items()):
        torch.manual_seed(100 + i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(lively_dir), config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "ia3_" in name:
                    p.copy_(1 + 0.5 * torch.randn_like(p))
        dest = tmp_path_factory.mktemp(f"adapter-{kind}")
        model.save_pretrained(dest)
        out[kind] = dest
        if kind == "lora":
            merged = tmp_path_factory.mktemp("merged")
            model.merge_and_unload().save_pretrained(merged, safe_serialization=True)
            tokenizer.save_pretrained(merged)
            out["merged"] = merged
    return out
