"""What stages kto and grpo ask of records: a kto label on every answer; grpo prompts without an
answer, in every chat format and TRL's `{"prompt": ...}`, with their other columns kept; their
encodings (the trained answer only; the prompt up to the generation header, cut from the left);
and the exact one-line errors, each naming file:line."""

from __future__ import annotations

import json

import pytest
from tests.data.test_bad_input import lines_file

from danlu.config.sections import DataArgs, DataSource
from danlu.data.encode import encode_labelled, encode_prompt
from danlu.data.pipeline import record_rules
from danlu.data.readers import SourceStats, read_source
from danlu.data.templates import get_template
from danlu.utils.errors import UsageError

KTO, GRPO = record_rules("kto"), record_rules("grpo")


def read(path, rules, fmt="auto"):
    return list(
        read_source(DataSource(str(path), format=fmt), SourceStats(str(path)), "error", 0, rules)
    )


def error(path, rules, fmt="auto") -> str:
    with pytest.raises(UsageError) as e:
        read(path, rules, fmt)
    assert "\n" not in str(e.value)
    return str(e.value)


def chat(*pairs, **extra):
    return {"messages": [{"role": r, "content": c} for r, c in pairs], **extra}


# --- kto -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "label"),
    [(True, True), (False, False), (1, True), (0, False), ("true", True), ("False", False)],
)
def test_kto_labels_in_every_spelling(tmp_path, value, label):
    path = lines_file(tmp_path, chat(("user", "q"), ("assistant", "a"), kto_tag=value))
    assert read(path, KTO)[0].meta["kto_label"] is label


def test_kto_label_column_is_configurable(tmp_path):
    path = lines_file(tmp_path, {"instruction": "q", "output": "a", "label": False})
    assert read(path, record_rules("kto", "label"))[0].meta["kto_label"] is False


def test_kto_record_without_a_label(tmp_path):
    path = lines_file(tmp_path, chat(("user", "q"), ("assistant", "a"), kto_tag=True),
                      chat(("user", "q"), ("assistant", "b")))  # fmt: skip
    assert error(path, KTO) == (
        f"{path}:2: missing field 'kto_tag': stage kto needs every answer labelled good (true) "
        "or bad (false) (kto_tag: names the column)"
    )


def test_kto_label_that_is_not_a_boolean(tmp_path):
    path = lines_file(tmp_path, chat(("user", "q"), ("assistant", "a"), kto_tag="maybe"))
    assert error(path, KTO) == f"{path}:1: field 'kto_tag' must be true or false, got 'maybe'"


def test_kto_answer_only_the_last_turn_is_trained(tokenizer):
    from danlu.data.types import Conversation, Message

    conv = Conversation(
        [Message("user", "q1"), Message("assistant", "a1"), Message("user", "q2"),
         Message("assistant", "a2")], "x:1", meta={"kto_label": False},
    )  # fmt: skip
    res = encode_labelled(conv, tokenizer, get_template("auto", tokenizer), DataArgs())
    trained = tokenizer.decode([t for t in res.labels if t != -100])
    assert res.label is False and trained == "a2<|im_end|>"


# --- grpo ----------------------------------------------------------------------------------------


def test_plain_prompt_records_keep_their_other_columns(tmp_path):
    path = lines_file(tmp_path, {"prompt": "What is 2 + 3?", "solution": "5", "level": 1})
    conv = read(path, GRPO)[0]
    assert [(m.role, m.content) for m in conv.messages] == [("user", "What is 2 + 3?")]
    assert conv.meta == {"prompt": "What is 2 + 3?", "columns": {"solution": "5", "level": 1}}


def test_trl_conversational_prompt(tmp_path):
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2 + 3?"}]
    path = lines_file(tmp_path, {"prompt": turns, "solution": "5"})
    conv = read(path, GRPO)[0]
    assert [m.role for m in conv.messages] == ["system", "user"]
    assert conv.meta["prompt"] == turns and conv.meta["columns"] == {"solution": "5"}


@pytest.mark.parametrize(
    "record",
    [
        {"instruction": "2 + 3?", "solution": "5"},
        {"instruction": "2 + 3?", "output": "", "solution": "5"},
        chat(("user", "2 + 3?"), solution="5"),
        {"conversations": [{"from": "human", "value": "2 + 3?"}], "solution": "5"},
    ],
)
def test_chat_formats_without_the_answer(tmp_path, record):
    conv = read(lines_file(tmp_path, record), GRPO)[0]
    assert conv.messages[-1].role == "user" and conv.meta["columns"]["solution"] == "5"
    assert conv.meta["prompt"][-1] == {"role": "user", "content": "2 + 3?"}


def test_grpo_record_that_already_has_an_answer(tmp_path):
    path = lines_file(tmp_path, chat(("user", "q")), chat(("user", "q"), ("assistant", "a")))
    assert error(path, GRPO) == (
        f"{path}:2: the last turn (turn 2) is an answer; stage grpo records are prompts only "
        "(the model writes the answers)"
    )
    alpaca = lines_file(tmp_path, {"instruction": "q", "output": "a"}, name="a.jsonl")
    assert error(alpaca, GRPO) == (
        f"{alpaca}:1: field 'output' holds an answer; stage grpo records are prompts only "
        "(the model writes the answers)"
    )


def test_a_prompt_record_is_no_sft_record(tmp_path):
    path = lines_file(tmp_path, {"prompt": "q", "solution": "1"})
    with pytest.raises(UsageError, match=r":1: no assistant turn"):
        read(path, record_rules("sft"))


def test_prompt_encoding_ends_at_the_generation_header(tokenizer):
    from danlu.data.types import Conversation, Message

    template = get_template("auto", tokenizer)
    conv = Conversation([Message("user", "What is 2 + 3?")], "x:1",
                        meta={"prompt": "What is 2 + 3?", "columns": {"solution": "5"}})  # fmt: skip
    res = encode_prompt(conv, tokenizer, template, DataArgs())
    want = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
        tokenize=False, chat_template=template.source,
    )  # fmt: skip
    assert tokenizer.decode(res.input_ids) == want and want.endswith("<|im_start|>assistant\n")
    assert (
        json.loads(res.columns) == {"solution": "5"} and json.loads(res.prompt) == "What is 2 + 3?"
    )
    assert not res.truncated


def test_long_prompts_lose_old_rounds_then_their_start(tokenizer):
    from danlu.data.types import Conversation, Message

    template = get_template("auto", tokenizer)
    long = " ".join(["word"] * 200)
    turns = [Message("system", "sys"), Message("user", long), Message("assistant", "ok"),
             Message("user", "last question")]  # fmt: skip
    conv = Conversation(turns, "x:1", meta={"prompt": "", "columns": {}})
    res = encode_prompt(conv, tokenizer, template, DataArgs(cutoff_len=40))
    text = tokenizer.decode(res.input_ids)
    assert res.truncated and "word" not in text and "last question" in text and "sys" in text
    res = encode_prompt(conv, tokenizer, template, DataArgs(cutoff_len=12))
    assert len(res.input_ids) == 12 and tokenizer.decode(res.input_ids).endswith("assistant\n")
