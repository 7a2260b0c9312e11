"""Each bad-input kind: the exact one-line message under `error`, exact counts under `skip`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from danlu.config.sections import DataSource
from danlu.data.readers import SourceStats, read_source
from danlu.utils.errors import UsageError

GOOD = {"instruction": "q", "output": "a"}


def convs_of(path, fmt="auto", mode="error"):
    stats = SourceStats(str(path))
    return list(read_source(DataSource(str(path), format=fmt), stats, mode)), stats


def error_of(path, fmt="auto") -> str:
    with pytest.raises(UsageError) as e:
        convs_of(path, fmt)
    assert "\n" not in str(e.value)
    return str(e.value)


def lines_file(tmp_path: Path, *lines: bytes | str | dict, name="d.jsonl") -> Path:
    out = b""
    for line in lines:
        if isinstance(line, (dict, list)):
            line = json.dumps(line, ensure_ascii=False)
        out += (line.encode() if isinstance(line, str) else line) + b"\n"
    path = tmp_path / name
    path.write_bytes(out)
    return path


def turns(*pairs):
    return {"conversations": [{"role": r, "content": c} for r, c in pairs]}


CASES = [
    ('{"instruction": "q", "output": ', "invalid JSON: Expecting value (column 31)"),
    ({"instruction": "q"}, "missing field 'output' (format alpaca)"),
    ({"instruction": "q", "output": "   "}, "empty assistant content (field 'output')"),
    ({"instruction": ["q"], "output": "a"}, "field 'instruction' must be a string, got a list"),
    ([1, 2], "record must be a JSON object, got a list"),
    (b'{"instruction": "caf\xe9", "output": "a"}', "invalid UTF-8: byte 0xe9 at column 21"),
]


@pytest.mark.parametrize(("line", "message"), CASES)
def test_alpaca_bad_record_exact_message(tmp_path, line, message):
    path = lines_file(tmp_path, GOOD, line, GOOD)
    assert error_of(path, "alpaca") == f"{path}:2: {message}"


CHAT_CASES = [
    (turns(("user", "q"), ("bot", "a")),
     "unknown role 'bot' in turn 2 (expected system, user, assistant, tool, observation)"),
    (turns(("user", "q"), ("assistant", "a"), ("assistant", "b")),
     "two consecutive assistant turns (turns 2 and 3); the template cannot express them"),
    (turns(("user", "q"), ("assistant", "")), "empty assistant content in turn 2"),
    (turns(("system", "s"), ("user", "q")), "no assistant turn"),
    (turns(("user", "q"), ("system", "s"), ("assistant", "a")), "system turn 2 must be the first turn"),
    ({"conversations": [{"content": "q"}]}, "missing field 'role' in turn 1"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "bard", "value": "a"}]},
     "unknown role 'bard' in turn 2 (expected system, human, gpt, function_call, observation)"),
    (turns(("assistant", "a"), ("user", "q"), ("assistant", "b")),
     "turn 1 is an assistant turn; a conversation starts with a user turn (after an optional system turn)"),
    (turns(("system", "s"), ("assistant", "a")),
     "turn 2 is an assistant turn; a conversation starts with a user turn (after an optional system turn)"),
    ({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "b"}]},
     "turn 1 is an assistant turn; a conversation starts with a user turn (after an optional system turn)"),
    (turns(("user", "q"), ("user", "q2"), ("assistant", "a")),
     "two consecutive user turns (turns 1 and 2); merge them or put the answer between them"),
    (turns(("user", "q"), ("observation", "{}"), ("assistant", "a")),
     "an observation turn (turn 2) cannot follow a user turn (turn 1); expected assistant or function_call"),
    (turns(("observation", "{}"), ("assistant", "a")),
     "turn 1 is an observation turn; a conversation starts with a user turn (after an optional system turn)"),
]  # fmt: skip


@pytest.mark.parametrize(("record", "message"), CHAT_CASES)
def test_conversation_bad_record_exact_message(tmp_path, record, message):
    path = lines_file(tmp_path, turns(("user", "x"), ("assistant", "y")), record)
    assert (
        error_of(path, "auto" if "from" in json.dumps(record) else "conversations")
        == f"{path}:2: {message}"
    )


def test_pairwise_bad_records(tmp_path):
    path = lines_file(tmp_path, {"instruction": "q", "chosen": "a", "rejected": ""})
    assert error_of(path, "pairwise") == f"{path}:1: empty assistant content (field 'rejected')"
    path = lines_file(tmp_path, {"instruction": "q", "chosen": "a"}, name="p.jsonl")
    assert error_of(path, "pairwise") == f"{path}:1: missing field 'rejected' (format pairwise)"
    path = lines_file(
        tmp_path, {"instruction": "q", "chosen": "same ", "rejected": "same"}, name="s.jsonl"
    )
    assert error_of(path, "pairwise") == (
        f"{path}:1: chosen and rejected are the same answer: nothing to prefer"
    )


def test_skip_counts_every_reason(tmp_path):
    bad = [line for line, _ in CASES]
    path = lines_file(tmp_path, GOOD, *bad, GOOD, bad[0], "", GOOD)  # a blank line is not a record
    convs, stats = convs_of(path, "alpaca", mode="skip")
    assert len(convs) == 3
    assert stats.records == 10
    assert stats.skipped == {
        "invalid JSON": 2, "missing field": 1, "empty assistant content": 1, "wrong type": 1,
        "not an object": 1, "invalid UTF-8": 1,
    }  # fmt: skip


def test_skip_counts_conversation_reasons(tmp_path):
    good = turns(("user", "x"), ("assistant", "y"))
    path = lines_file(tmp_path, *[r for r, _ in CHAT_CASES[:5]], good, good)
    convs, stats = convs_of(path, "conversations", mode="skip")
    assert len(convs) == 2
    assert stats.skipped == {
        "unknown role": 1, "consecutive model turns": 1, "empty assistant content": 1,
        "no assistant turn": 1, "misplaced system turn": 1,
    }  # fmt: skip


def test_invalid_json_inside_array_is_fatal_even_when_skipping(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(
        '[\n  {"instruction": "q", "output": "a"},\n  {"instruction": "q" "output": "a"}\n]\n'
    )
    with pytest.raises(UsageError) as e:
        convs_of(path, mode="skip")
    assert str(e.value) == (
        f"{path}:3: invalid JSON: Expecting ',' delimiter (column 23; a JSON array cannot be read past it)"
    )


def test_invalid_utf8_inside_array(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(
        b'[\n{"instruction": "q", "output": "a"},\n{"instruction": "\xff", "output": "a"}]'
    )
    assert (
        error_of(path)
        == f"{path}:3: invalid UTF-8: byte 0xff (a JSON array cannot be read past it)"
    )


def test_bad_utf8_in_csv_and_txt_is_skippable(tmp_path):
    csv_path = lines_file(
        tmp_path, "instruction,output", "q1,a1", b"q\xff,a2", "q3,a3", name="d.csv"
    )
    assert error_of(csv_path) == f"{csv_path}:3: invalid UTF-8: byte 0xff at column 2"
    convs, stats = convs_of(csv_path, mode="skip")
    assert [c.messages[0].content for c in convs] == ["q1", "q3"] and stats.skipped == {
        "invalid UTF-8": 1
    }
    txt = lines_file(tmp_path, "one", "", "two", b"t\xffo", "", "three", name="d.txt")
    assert error_of(txt) == f"{txt}:4: invalid UTF-8: byte 0xff at column 2"
    convs, stats = convs_of(txt, mode="skip")
    assert [c.text for c in convs] == ["one", "three"] and stats.skipped == {"invalid UTF-8": 1}


def test_missing_file_unsupported_file_and_empty_pattern(tmp_path):
    assert (
        error_of(tmp_path / "nope.jsonl")
        == f"{tmp_path / 'nope.jsonl'}: no such data file or directory"
    )
    xlsx = tmp_path / "d.xlsx"
    xlsx.write_text("x")
    assert error_of(xlsx) == (
        f"{xlsx}: unsupported file type '.xlsx' (expected .json, .jsonl, .parquet, .csv, .txt)"
    )
    assert (
        error_of(tmp_path / "*.parquet")
        == f"{tmp_path}/*.parquet: the pattern matches no data files"
    )


def test_empty_dataset(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n\n")
    assert error_of(empty) == f"{empty}: empty data set (no records)"
    arr = tmp_path / "e.json"
    arr.write_text("[ ]")
    assert error_of(arr) == f"{arr}: empty data set (no records)"
    path = lines_file(tmp_path, {"instruction": "q"}, "{", name="b.jsonl")
    with pytest.raises(UsageError) as e:
        convs_of(path, "alpaca", mode="skip")
    assert (
        str(e.value)
        == f"{path}: no usable records (2 read, all skipped: 1 invalid JSON, 1 missing field)"
    )


def test_hub_name_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    message = error_of("someone/no-such-dataset-danlu")
    assert message.startswith(
        "someone/no-such-dataset-danlu: no such local file, and loading it as a `datasets` name failed (offline or unknown): "
    )


def test_skip_counts_role_order_reasons(tmp_path):
    good = turns(("user", "x"), ("assistant", "y"))
    records = [
        r
        for r, m in CHAT_CASES
        if "starts with a user turn" in m or "cannot follow" in m or "consecutive user" in m
    ]
    path = lines_file(tmp_path, good, *records)
    convs, stats = convs_of(path, "auto", mode="skip")
    assert len(convs) == 1
    assert stats.skipped == {
        "starts with a model turn": 3, "roles out of order": 2, "consecutive user turns": 1,
    }  # fmt: skip


def test_invalid_json_at_the_end_of_a_small_array_names_its_line_and_column(tmp_path):
    # The error is found after the reader has moved its buffer on: the position must move too.
    path = tmp_path / "a.json"
    path.write_text('[\n  {"instruction": "q", "output": "a"},\n  {"instruction" "q"}\n]\n')
    with pytest.raises(UsageError) as e:
        convs_of(path)
    assert str(e.value) == (
        f"{path}:3: invalid JSON: Expecting ':' delimiter (column 18; a JSON array cannot be read past it)"
    )
