"""Every reader and record shape on literal records (always) and on ../shared/data (when present)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tests.conftest import shared_path

from danlu.config.sections import DataSource
from danlu.data.readers import SourceStats, read_source
from danlu.data.types import Message


def read(path, **kw):
    stats = SourceStats(str(path))
    convs = list(read_source(DataSource(str(path), **kw), stats))
    return convs, stats


def roles(conv):
    return [(m.role, m.content) for m in conv.messages]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return path


ALPACA = {"instruction": "Add", "input": "1 and 2", "output": "3", "system": "Be brief.",
          "history": [["hi", "hello"]]}  # fmt: skip


def test_alpaca_full_record_order_and_source(tmp_path):
    (conv,), stats = read(write_jsonl(tmp_path / "a.jsonl", [ALPACA]))
    assert stats.format == "alpaca" and stats.detected
    assert roles(conv) == [
        ("system", "Be brief."), ("user", "hi"), ("assistant", "hello"),
        ("user", "Add\n1 and 2"), ("assistant", "3"),
    ]  # fmt: skip
    assert conv.source == f"{tmp_path / 'a.jsonl'}:1"


def test_json_array_pretty_printed_gives_start_lines(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"instruction": "q1", "output": "a1"},
                                {"instruction": "q2", "output": "a2"}], indent=2))  # fmt: skip
    convs, _ = read(path)
    assert [c.source.rsplit(":", 1)[1] for c in convs] == ["2", "6"]
    assert roles(convs[1]) == [("user", "q2"), ("assistant", "a2")]


def test_json_array_larger_than_a_chunk_streams(tmp_path, monkeypatch):
    import danlu.data.files as files

    monkeypatch.setattr(files, "_CHUNK", 7)  # every record straddles several reads
    path = tmp_path / "a.json"
    records = [{"instruction": f"问题 {i}", "output": "答" * i} for i in range(1, 30)]
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    convs, _ = read(path)
    assert [c.messages[1].content for c in convs] == ["答" * i for i in range(1, 30)]
    assert convs[2].source.endswith(":10")  # 1 + 4 lines per record at indent=1


def test_jsonl_in_a_json_file(tmp_path):
    path = write_jsonl(tmp_path / "a.json", [{"prompt": "p", "response": "r"}] * 3)
    convs, stats = read(path)
    assert len(convs) == 3 and stats.format == "prompt_response"
    assert convs[2].source.endswith("a.json:3")


def test_column_map_advertisegen(tmp_path):
    rec = {"content": "类型#裙*颜色#红色", "summary": "这条红色裙子很漂亮。"}
    (conv,), stats = read(write_jsonl(tmp_path / "adgen.jsonl", [rec]),
                          columns={"prompt": "content", "response": "summary"})  # fmt: skip
    assert stats.format == "prompt_response"
    assert roles(conv) == [("user", rec["content"]), ("assistant", rec["summary"])]


def test_prompt_response_with_history(tmp_path):
    rec = {"prompt": "and 3?", "response": "6", "history": [["1+2?", "3"]]}
    (conv,), _ = read(write_jsonl(tmp_path / "p.jsonl", [rec]), format="prompt_response")
    assert roles(conv) == [
        ("user", "1+2?"),
        ("assistant", "3"),
        ("user", "and 3?"),
        ("assistant", "6"),
    ]


def test_chatglm3_conversations_with_tools_and_metadata(tmp_path):
    rec = {"tools": [{"name": "weather"}], "conversations": [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "metadata": "weather", "content": "tool_call(city='Paris')"},
        {"role": "observation", "content": "{\"temp\": 20}"},
        {"role": "assistant", "content": "20 degrees."},
    ]}  # fmt: skip
    (conv,), stats = read(write_jsonl(tmp_path / "c.jsonl", [rec]))
    assert stats.format == "conversations"
    assert conv.tools == [{"name": "weather"}]
    assert [m.role for m in conv.messages] == [
        "system",
        "user",
        "function_call",
        "observation",
        "assistant",
    ]
    assert json.loads(conv.messages[2].content) == {
        "name": "weather",
        "arguments": "tool_call(city='Paris')",
    }


def test_openai_messages_tool_calls_and_tool_role(tmp_path):
    call = {"type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    rec = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "add one"}]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "2"},
        {"role": "assistant", "content": "It is 2."},
    ]}  # fmt: skip
    (conv,), stats = read(write_jsonl(tmp_path / "m.jsonl", [rec]))
    assert stats.format == "messages"
    assert roles(conv) == [
        ("user", "add one"), ("function_call", '{"name": "add", "arguments": {"a": 1}}'),
        ("observation", "2"), ("assistant", "It is 2."),
    ]  # fmt: skip


def test_sharegpt_roles(tmp_path):
    rec = {"conversations": [
        {"from": "system", "value": "s"}, {"from": "human", "value": "u"},
        {"from": "function_call", "value": "{}"}, {"from": "observation", "value": "o"},
        {"from": "gpt", "value": "a"},
    ], "tools": "[{\"name\": \"f\"}]"}  # fmt: skip
    (conv,), stats = read(write_jsonl(tmp_path / "s.jsonl", [rec]))
    assert stats.format == "sharegpt"
    assert [m.role for m in conv.messages] == [
        "system",
        "user",
        "function_call",
        "observation",
        "assistant",
    ]
    assert conv.tools == [{"name": "f"}]


def test_pairwise_prompt_style_and_conversation_style(tmp_path):
    recs = [
        {"instruction": "q", "chosen": "good", "rejected": "bad"},
        {"conversations": [{"from": "human", "value": "q2"}],
         "chosen": {"from": "gpt", "value": "good2"}, "rejected": {"from": "gpt", "value": "bad2"}},
    ]  # fmt: skip
    convs, stats = read(write_jsonl(tmp_path / "d.jsonl", recs))
    assert stats.format == "pairwise"
    assert roles(convs[0]) == [("user", "q")]
    assert (convs[0].chosen, convs[0].rejected) == (
        Message("assistant", "good"),
        Message("assistant", "bad"),
    )
    assert roles(convs[1]) == [("user", "q2")] and convs[1].chosen.content == "good2"


def test_text_jsonl_and_txt_paragraphs(tmp_path):
    (conv,), stats = read(write_jsonl(tmp_path / "t.jsonl", [{"text": "doc"}]))
    assert stats.format == "text" and conv.text == "doc" and conv.messages == []
    txt = tmp_path / "book.txt"
    txt.write_text("para one\nline two\n\n\npara two\n\nthree\n", encoding="utf-8")
    convs, stats = read(txt)
    assert [c.text for c in convs] == ["para one\nline two", "para two", "three"]
    assert [c.source.rsplit(":", 1)[1] for c in convs] == ["1", "5", "7"]


def test_csv_and_parquet(tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "output"])
        w.writerow(["q1", "a1"])
        w.writerow(["多行\n问题", "a2"])
        w.writerow(["q3", "a3"])
    convs, _ = read(path)
    assert [c.messages[0].content for c in convs] == ["q1", "多行\n问题", "q3"]
    assert [c.source.rsplit(":", 1)[1] for c in convs] == ["2", "4", "5"]  # csv line_num: row end

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"prompt": ["p1", "p2"], "response": ["r1", "r2"]}), tmp_path / "d.parquet"
    )
    convs, stats = read(tmp_path / "d.parquet")
    assert stats.format == "prompt_response" and [c.source[-2:] for c in convs] == [":1", ":2"]


def test_directory_and_glob(tmp_path):
    for i in range(3):
        write_jsonl(tmp_path / f"part{i}.jsonl", [{"text": f"d{i}{j}"} for j in range(2)])
    (tmp_path / "notes.md").write_text("ignored")
    convs, stats = read(tmp_path)
    assert [c.text for c in convs] == ["d00", "d01", "d10", "d11", "d20", "d21"]
    assert len(stats.files) == 3
    convs, _ = read(tmp_path / "part[12].jsonl")
    assert [c.text for c in convs] == ["d10", "d11", "d20", "d21"]


def test_max_samples_and_system_default(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl", [{"instruction": f"q{i}", "output": "a"} for i in range(5)]
    )
    convs, stats = read(path, max_samples=2, system="Be kind.")
    assert len(convs) == 2 and stats.records == 2
    assert roles(convs[0])[0] == ("system", "Be kind.")


def test_undetectable_format_names_the_fields(tmp_path):
    from danlu.utils.errors import UsageError

    path = write_jsonl(tmp_path / "x.jsonl", [{"foo": 1, "bar": 2}])
    with pytest.raises(UsageError) as e:
        read(path)
    assert str(e.value) == (
        f"{path}:1: cannot detect the format from fields ['bar', 'foo']; set format: to one of "
        "alpaca, prompt_response, conversations, messages, sharegpt, text, pairwise, prompt "
        "(and columns: to rename fields)"
    )


# --- real records from ../shared/data (LLaMA-Factory demo files) ---------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "count", "last_line"),
    [
        ("alpaca_en_demo.json", "alpaca", 999, 4992),
        ("alpaca_zh_demo.json", "alpaca", 1000, 4997),
        ("identity.json", "alpaca", 91, 452),
        ("dpo_en_demo.json", "pairwise", 300, 7210),
        ("dpo_zh_demo.json", "pairwise", 300, 5042),
        ("glaive_toolcall_en_demo.json", "sharegpt", 300, 9137),
        ("glaive_toolcall_zh_demo.json", "sharegpt", 300, 8977),
        ("c4_demo.jsonl", "text", 300, 300),
    ],
)
def test_shared_demo_files(name, fmt, count, last_line):
    path = shared_path("data", name)
    convs, stats = read(path)
    assert (stats.format, len(convs), stats.skipped) == (fmt, count, {})
    assert convs[0].source == f"{path}:{1 if name.endswith('l') else 2}"
    assert convs[-1].source == f"{path}:{last_line}"


def test_shared_records_content():
    (first, *_), _ = read(shared_path("data", "alpaca_zh_demo.json"), max_samples=1)
    assert first.messages[0].content.startswith("识别并解释给定列表中的两个科学理论")
    tool, _ = read(shared_path("data", "glaive_toolcall_en_demo.json"), max_samples=1)
    assert [m.role for m in tool[0].messages] == [
        "user", "assistant", "user", "function_call", "observation", "assistant", "user", "assistant",
    ]  # fmt: skip
    assert tool[0].tools[0]["name"] == "search_recipes"
    assert json.loads(tool[0].messages[3].content)["name"] == "search_recipes"
    dpo, _ = read(shared_path("data", "dpo_en_demo.json"))
    assert all(
        c.messages[-1].role == "user" and c.chosen.content and c.rejected.content for c in dpo
    )
    assert sum(c.messages[0].role == "system" for c in dpo) == 80
