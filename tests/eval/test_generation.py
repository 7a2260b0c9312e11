"""Generation: prompts and references from any data format, batched greedy decoding."""

from __future__ import annotations

from danlu.config.sections import DataSource
from danlu.data.types import Conversation, Message
from danlu.eval.generation import GenerationSettings, generate
from danlu.eval.samples import build_generation_set, read_conversations, split_reference

from .conftest import write_jsonl


def conv(*turns, **kw):
    return Conversation([Message(r, c) for r, c in turns], "x:1", **kw)


def test_reference_is_the_last_assistant_turn():
    c = conv(
        ("system", "s"), ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")
    )
    prompt, ref = split_reference(c)
    assert ref == "a2" and [m.content for m in prompt] == ["s", "q1", "a1", "q2"]
    trailing = conv(("user", "q1"), ("assistant", "a1"), ("user", "unanswered"))
    assert split_reference(trailing)[1] == "a1"
    pair = conv(
        ("user", "q"), chosen=Message("assistant", "good"), rejected=Message("assistant", "bad")
    )
    assert split_reference(pair) == ([Message("user", "q")], "good")


def test_prompts_render_like_inference_and_drops_are_counted(tokenizer, tmp_path):
    rows = [{"instruction": "Who are you?", "output": "Danlu Assistant.", "system": "Be brief."},
            {"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}]}]  # fmt: skip
    a = write_jsonl(tmp_path / "a.jsonl", rows[:1])
    s = write_jsonl(tmp_path / "s.jsonl", rows[1:])
    t = write_jsonl(tmp_path / "t.jsonl", [{"text": "no answer here"}])
    convs, stats = read_conversations(
        [DataSource(str(a)), DataSource(str(s)), DataSource(str(t))], "error", None
    )
    assert [st["format"] for st in stats] == ["alpaca", "sharegpt", "text"]
    gset = build_generation_set(convs, tokenizer, "auto", 1024)
    expected = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}],
        add_generation_prompt=True, tokenize=False)  # fmt: skip
    assert tokenizer.decode(gset.prompts[0]) == expected
    assert gset.references == ["Danlu Assistant.", "你好！"]
    assert dict(gset.dropped) == {"text record (no reference answer)": 1}
    short = build_generation_set(convs, tokenizer, "auto", 8)
    assert short.truncated == 2 and all(len(p) == 8 for p in short.prompts)
    assert short.prompts[0] == gset.prompts[0][-8:]


def test_eval_max_samples_caps_records_across_sources(tmp_path):
    a = write_jsonl(
        tmp_path / "a.jsonl", [{"instruction": f"q{i}", "output": "a"} for i in range(3)]
    )
    b = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "q", "output": "a"}])
    convs, stats = read_conversations([DataSource(str(a)), DataSource(str(b))], "error", 2)
    assert [c.source.rsplit(":", 1)[1] for c in convs] == ["1", "2"] and len(stats) == 1


def test_stop_ids_include_the_end_of_turn_token(tokenizer):
    from danlu.data.templates import get_template, stop_ids

    ids = stop_ids(tokenizer, get_template("chatml", tokenizer))
    assert tokenizer.convert_ids_to_tokens(sorted(ids)) == ["<|im_end|>"]  # SmolLM2: EOS is it


def varied_model(tokenizer):
    """An untied random LLaMA with large weights: its greedy outputs differ token by token (the
    tied tiny fixture just echoes the last token, which hides padding bugs)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=False, initializer_range=0.5)  # fmt: skip
    return LlamaForCausalLM(config).eval()


def test_batched_left_padded_generation_equals_one_by_one(tokenizer):
    import torch

    model, tok = varied_model(tokenizer), tokenizer
    texts = [
        "Hi",
        "How should I brew green tea for two people?",
        "你好，请介绍一下普洱茶。",
        "1 2 3",
    ]
    prompts = [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                       return_dict=True)["input_ids"] for t in texts]  # fmt: skip
    assert len({len(p) for p in prompts}) == 4  # different lengths: rows really are padded
    settings = GenerationSettings(max_new_tokens=6, batch_size=4)
    batched = generate(model, tok, prompts, settings, stop=[tok.eos_token_id])
    single = []
    for p in prompts:
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([p]), max_new_tokens=6, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
        single.append(tok.decode(out[0, len(p) :], skip_special_tokens=True).strip())
    assert batched == single
    assert len(set(batched)) == 4 and all(batched)
