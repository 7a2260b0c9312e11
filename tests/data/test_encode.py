"""Token ids and labels: parity with apply_chat_template and the DESIGN §3 loss-mask rule."""

from __future__ import annotations

import pytest
from tests.data.template_cases import SHARED_TEMPLATES, qwen2_with

from danlu.config.sections import DataArgs
from danlu.data.encode import encode_conversation, encode_messages, encode_pair
from danlu.data.templates import get_template
from danlu.data.types import Conversation, Message

IGNORE = -100
SHAPES = {
    "single": [("user", "What is two plus two?"), ("assistant", "Two plus two is four.")],
    "system": [("system", "You answer tersely."), ("user", "Name a colour."), ("assistant", "Blue.")],
    "multi": [("user", "Hello there!"), ("assistant", "Hi, how can I help?"),
              ("user", "Tell me a joke."), ("assistant", "Why did the chicken cross the road?")],
    "chinese": [("system", "你是一个乐于助人的助手。"), ("user", "你好，你是谁？"),
                ("assistant", "我是丹炉的演示助手。"), ("user", "今天天气怎么样？"),
                ("assistant", "我无法查看实时天气。")],
}  # fmt: skip
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
# Text the model produces before the content, beyond the generation prompt (reasoning blocks).
THINK = {
    "Qwen-Qwen3-0.6B": ("last", "<think>\n\n</think>\n\n"),
    "GLM-4.6": ("all", "\n<think></think>\n"),
}
CLOSER = {"GLM-4.6": "", "google-gemma-2-2b-it": "<end_of_turn>", "microsoft-Phi-3.5-mini-instruct": "<|end|>",
          "meta-llama-Llama-3.1-8B-Instruct": "<|eot_id|>", "ibm-granite-granite-3.3-2B-Instruct": "<|end_of_text|>",
          "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": "<｜end▁of▁sentence｜>"}  # fmt: skip


def _conv(pairs, tools=None) -> Conversation:
    return Conversation([Message(r, c) for r, c in pairs], "test:1", tools=tools)


def _reference(tok, hf, tools=None):
    """apply_chat_template's text and ids, or skip when the template cannot express the shape."""
    try:
        text = tok.apply_chat_template(hf, tools=tools, tokenize=False)
        ids = tok.apply_chat_template(hf, tools=tools, tokenize=True)["input_ids"]
    except Exception as exc:
        pytest.skip(f"the template cannot render this shape: {str(exc).splitlines()[0]}")
    return text, list(ids)


def _expected_labels(tok, text, ids, spans):
    """Oracle: tokens overlapping the given character spans are trained."""
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) == len(ids)
    return [
        t if any(s < b and e > a for a, b in spans) else IGNORE
        for t, (s, e) in zip(ids, offsets, strict=True)
    ]


def _answer_spans(text, pairs, name, closer):
    """Spans of assistant contents located by search (test-only oracle: contents are unique)."""
    spans, cursor = [], 0
    answers = [c for r, c in pairs if r == "assistant"]
    for k, content in enumerate(answers):
        at = text.index(content, cursor)
        when, think = THINK.get(name, ("", ""))
        pre = think if when == "all" or (when == "last" and k == len(answers) - 1) else ""
        assert text[at - len(pre) : at] == pre
        assert text.startswith(closer, at + len(content))
        spans.append((at - len(pre), at + len(content) + len(closer)))
        cursor = at + len(content)
    return spans


def _check_parity(tok, template, name, pairs, closer):
    hf = [{"role": r, "content": c} for r, c in pairs]
    text, ref = _reference(tok, hf)
    got = encode_conversation(_conv(pairs), tok, template, DataArgs(cutoff_len=4096))
    expected = _expected_labels(tok, text, ref, _answer_spans(text, pairs, name, closer))
    if closer == "":  # no end-of-turn text: EOS appended and trained (see danlu.data.encode)
        ref, expected = [*ref, tok.eos_token_id], [*expected, tok.eos_token_id]
    assert got.input_ids == ref
    assert got.labels == expected
    assert not got.truncated and got.dropped is None


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_parity_smollm2(tokenizer, shape):
    _check_parity(
        tokenizer, get_template("auto", tokenizer), "smollm2", SHAPES[shape], "<|im_end|>"
    )


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("name", SHARED_TEMPLATES)
def test_parity_shared_templates(name, shape):
    tok = qwen2_with(name)
    _check_parity(
        tok, get_template("auto", tok), name, SHAPES[shape], CLOSER.get(name, "<|im_end|>")
    )


@pytest.mark.parametrize(
    "name", ["chatml", "qwen", "llama3", "llama2", "chatglm3", "alpaca", "default"]
)
def test_parity_builtin_templates(tokenizer, name):
    template = get_template(name, tokenizer)
    tok = _with_template(tokenizer, template.source)
    _check_parity(tok, template, name, SHAPES["multi"], template.closer(tokenizer))


def _with_template(tokenizer, source):
    import copy

    tok = copy.copy(tokenizer)
    tok.chat_template = source
    return tok


# -- tool calls -------------------------------------------------------------------------------

TOOL_CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
TOOL_TURNS = [("user", "Weather in Paris?"), ("function_call", TOOL_CALL),
              ("observation", '{"temperature": 21}'), ("assistant", "It is 21 degrees in Paris.")]  # fmt: skip
TOOL_HF = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": '{"temperature": 21}'},
    {"role": "assistant", "content": "It is 21 degrees in Paris."},
]  # fmt: skip
WITH_TOOL_CALLS = {"GLM-4.6", "Qwen-Qwen2.5-7B-Instruct", "Qwen-Qwen3-0.6B", "mistralai-Mistral-Nemo-Instruct-2407",
                   "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "meta-llama-Llama-3.1-8B-Instruct"}  # fmt: skip


@pytest.mark.parametrize("name", SHARED_TEMPLATES)
def test_tool_calls_parity_and_mask(name):
    tok = qwen2_with(name)
    hf = (
        TOOL_HF
        if name in WITH_TOOL_CALLS
        else [
            {**m, "role": "assistant", "content": TOOL_CALL} if m.get("tool_calls") else m
            for m in TOOL_HF
        ]
    )
    text, ref = _reference(tok, hf, TOOLS)
    got = encode_conversation(
        _conv(TOOL_TURNS, TOOLS), tok, get_template("auto", tok), DataArgs(cutoff_len=4096)
    )
    closer = CLOSER.get(name, "<|im_end|>")
    assert got.input_ids == ([*ref, tok.eos_token_id] if closer == "" else ref)
    _assert_trained_text(tok, got, text, "get_weather", after="Weather in Paris?", trained=True)
    _assert_trained_text(tok, got, text, "It is 21 degrees in Paris." + closer, trained=True)
    _assert_trained_text(tok, got, text, "Weather in Paris?", trained=False)
    if '"temperature": 21' in text:  # Phi-3.5 drops tool turns
        _assert_trained_text(tok, got, text, '"temperature": 21', trained=False)


def _assert_trained_text(tok, got, text, piece, trained, after=""):
    start = text.index(piece, text.index(after) + len(after) if after else 0)
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    inside = [
        i for i, (s, e) in enumerate(offsets) if s >= start and e <= start + len(piece) and e > s
    ]
    assert inside
    assert all((got.labels[i] != IGNORE) == trained for i in inside), piece


# -- the rule, literally, with the SmolLM2 template ---------------------------------------------


def test_golden_smollm2_single_turn(tokenizer):
    conv = _conv([("system", "Be brief."), ("user", "hi"), ("assistant", "hello")])
    got = encode_conversation(conv, tokenizer, get_template("auto", tokenizer), DataArgs())
    # <|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n
    assert got.input_ids == [1, 9690, 198, 6077, 5453, 30, 2, 198, 1, 4093, 198, 6004, 2, 198,
                             1, 520, 9531, 198, 28120, 2, 198]  # fmt: skip
    assert got.labels == [-100] * 18 + [28120, 2, -100]


def test_every_closer_and_first_answer_token_trained_nothing_else(tokenizer):
    pairs = SHAPES["multi"]
    got = encode_conversation(_conv(pairs), tokenizer, get_template("auto", tokenizer), DataArgs())
    ids, labels = got.input_ids, got.labels
    header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    starts = [i + len(header) for i in range(len(ids)) if ids[i : i + len(header)] == header]
    assert len(starts) == 2
    for start in starts:
        assert labels[start] == ids[start]  # the first answer token (no off-by-one)
        end = ids.index(tokenizer.convert_tokens_to_ids("<|im_end|>"), start)
        assert labels[start : end + 1] == ids[start : end + 1]  # content + <|im_end|>
        assert labels[end + 1] == IGNORE  # the "\n" after it is scaffolding
    trained = sum(lab != IGNORE for lab in labels)
    answer_tokens = sum(
        len(tokenizer.encode(c, add_special_tokens=False)) + 1 for r, c in pairs if r == "assistant"
    )
    assert trained == answer_tokens  # so no system/user/header token is trained


def test_straddling_first_token_is_trained(tokenizer):
    # "Assistant: " then "Hello": the BPE token " Hello" carries the scaffold's space.
    template = get_template("default", tokenizer)
    got = encode_conversation(
        _conv([("user", "hi"), ("assistant", "Hello")]), tokenizer, template, DataArgs()
    )
    tok = _with_template(tokenizer, template.source)
    ref = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]
    )
    assert got.input_ids == list(ref["input_ids"])
    first = next(i for i, lab in enumerate(got.labels) if lab != IGNORE)
    assert tokenizer.decode(got.input_ids[first:]) == " Hello<|im_end|>\n"
    assert got.labels[first:] == [*got.input_ids[first:-1], IGNORE]


def test_last_turn_only(tokenizer):
    args = DataArgs(train_on="last_turn")
    got = encode_conversation(
        _conv(SHAPES["multi"]), tokenizer, get_template("auto", tokenizer), args
    )
    trained = [t for t, lab in zip(got.input_ids, got.labels, strict=True) if lab != IGNORE]
    assert tokenizer.decode(trained) == "Why did the chicken cross the road?<|im_end|>"


def test_no_assistant_turn_is_dropped(tokenizer):
    got = encode_conversation(
        _conv([("user", "hi")]), tokenizer, get_template("auto", tokenizer), DataArgs()
    )
    assert got.dropped == "no assistant turn"


# -- truncation -------------------------------------------------------------------------------


def _encode(tokenizer, pairs, **args):
    return encode_conversation(
        _conv(pairs), tokenizer, get_template("chatml", tokenizer), DataArgs(**args)
    )


def test_oldest_rounds_dropped_system_kept(tokenizer):
    pairs = [("system", "S"), ("user", "first question " * 20), ("assistant", "first answer"),
             ("user", "second"), ("assistant", "second answer")]  # fmt: skip
    kept = [pairs[0], *pairs[3:]]
    short = encode_messages(
        [Message(r, c) for r, c in kept],
        None,
        tokenizer,
        get_template("chatml", tokenizer),
        "all_turns",
    )
    got = _encode(tokenizer, pairs, cutoff_len=len(short.input_ids))
    assert (got.input_ids, got.labels) == (short.input_ids, short.labels)
    assert got.truncated and got.dropped is None


def test_source_cut_left_target_cut_right(tokenizer):
    pairs = [
        ("user", "one two three four five six seven"),
        ("assistant", "alpha beta gamma delta epsilon"),
    ]
    full = _encode(tokenizer, pairs)
    k = next(i for i, lab in enumerate(full.labels) if lab != IGNORE)
    got = _encode(tokenizer, pairs, max_source_len=4, max_target_len=3)
    assert got.input_ids == full.input_ids[k - 4 : k + 3]
    assert got.labels == [IGNORE] * 4 + full.input_ids[k : k + 3]
    assert got.truncated


def test_cutoff_keeps_half_for_the_target(tokenizer):
    pairs = [("user", "word " * 60), ("assistant", "answer " * 60)]
    full = _encode(tokenizer, pairs)
    k = next(i for i, lab in enumerate(full.labels) if lab != IGNORE)
    got = _encode(tokenizer, pairs, cutoff_len=20)
    assert got.input_ids == full.input_ids[k - 10 : k + 10]
    assert got.labels[10:] == full.input_ids[k : k + 10]


def test_nothing_left_to_train_is_dropped(tokenizer):
    pairs = [("user", "q"), ("assistant", "a"), ("user", "long question " * 30)]
    got = _encode(tokenizer, pairs, cutoff_len=16)
    assert got.dropped == "no trained token after truncation"
    assert got.truncated


# -- pretraining and pairs ----------------------------------------------------------------------


def test_pretraining_trains_all_and_appends_eos(tokenizer):
    conv = Conversation([], "c4:1", text="The quick brown fox.")
    got = encode_conversation(
        conv, tokenizer, get_template("auto", tokenizer), DataArgs(), stage="pt"
    )
    body = tokenizer.encode("The quick brown fox.", add_special_tokens=True)
    assert got.input_ids == [*body, tokenizer.eos_token_id]
    assert got.labels == got.input_ids
    cut = encode_conversation(
        conv, tokenizer, get_template("auto", tokenizer), DataArgs(cutoff_len=3), stage="pt"
    )
    assert cut.input_ids == body[:3] and cut.truncated
    empty = Conversation([], "c4:2", text="")
    assert (
        encode_conversation(empty, tokenizer, None, DataArgs(), stage="pt").dropped == "empty text"
    )


def test_pair_shares_prompt_and_trains_only_the_answer(tokenizer):
    conv = Conversation([Message("user", "q1"), Message("assistant", "a1"), Message("user", "Pick one")],
                        "dpo:1", chosen=Message("assistant", "Good answer"),
                        rejected=Message("assistant", "Bad"))  # fmt: skip
    pair = encode_pair(conv, tokenizer, get_template("chatml", tokenizer), DataArgs())
    n = pair.prompt_len
    assert pair.chosen.input_ids[:n] == pair.rejected.input_ids[:n] == pair.prompt_ids
    for res, text in ((pair.chosen, "Good answer"), (pair.rejected, "Bad")):
        trained = [t for t, lab in zip(res.input_ids, res.labels, strict=True) if lab != IGNORE]
        assert tokenizer.decode(trained) == f"{text}<|im_end|>"
        assert res.labels[:n] == [IGNORE] * n
    short = encode_pair(conv, tokenizer, get_template("chatml", tokenizer), DataArgs(cutoff_len=12))
    # the oldest round goes; then 11 prompt + 4 answer tokens: the prompt is cut to 12 - 4 from the left
    assert short.truncated and short.prompt_len == 8
    assert len(short.chosen.input_ids) == 12 and len(short.rejected.input_ids) == 11
    assert (
        short.chosen.input_ids[: short.prompt_len] == short.rejected.input_ids[: short.prompt_len]
    )


def test_render_spans_brackets_and_colour(tokenizer):
    from danlu.data.preview_render import render_spans

    conv = _conv([("system", "S"), ("user", "hi"), ("assistant", "hello")])
    got = encode_conversation(conv, tokenizer, get_template("auto", tokenizer), DataArgs())
    tail = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert render_spans(got.input_ids, got.labels, tokenizer, color=False) == (
        f"<|im_start|>system\nS<|im_end|>\n{tail}[[hello<|im_end|>]]\n"
    )
    assert render_spans(got.input_ids, got.labels, tokenizer, color=True).endswith(
        "assistant\n\x1b[1;32mhello<|im_end|>\x1b[0m\n"
    )


class _SlowTokenizer:
    """A tokenizer without offsets (like the Python ChatGLM3 tokenizers): is_fast is False."""

    is_fast = False

    def __init__(self, fast):
        self._fast = fast

    def __call__(self, text, **kwargs):
        assert not kwargs.get("return_offsets_mapping")
        return self._fast(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._fast, name)


def test_slow_tokenizer_without_offsets_gives_the_same_ids_and_labels(tokenizer):
    template = get_template("auto", tokenizer)
    conv = _conv(SHAPES["chinese"])
    fast = encode_conversation(conv, tokenizer, template, DataArgs())
    slow = encode_conversation(conv, _SlowTokenizer(tokenizer), template, DataArgs())
    assert (slow.input_ids, slow.labels) == (fast.input_ids, fast.labels)
