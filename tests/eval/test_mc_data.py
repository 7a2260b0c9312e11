"""Benchmark files: the C-Eval/CMMLU CSV and MMLU JSONL layouts, and bad files exit 2 at file:line."""

from __future__ import annotations

import pytest

from danlu.cli import main
from danlu.eval.mc_data import load_questions
from danlu.utils.errors import UsageError

from .conftest import EXAMPLES, mmlu_row, write_jsonl

CEVAL = EXAMPLES / "data" / "eval" / "ceval"


def test_ceval_csv_folder_subjects_and_chinese_names():
    qs = load_questions(str(CEVAL / "val"), "mc_data").questions
    assert len(qs) == 10
    first = next(q for q in qs if q.subject == "tea_culture")
    assert first.question == "绿茶属于哪一类茶？"
    assert first.choices == ("不发酵茶", "全发酵茶", "后发酵茶", "半发酵茶")
    assert first.answer == "A"
    assert first.names == ("Tea Culture", "茶文化")  # from ceval/subject_mapping.json
    assert first.source.endswith("tea_culture_val.csv:2")


def test_cmmlu_csv_layout(tmp_path):
    path = tmp_path / "agronomy.csv"
    path.write_text(",Question,A,B,C,D,Answer\n0,问题一,甲,乙,丙,丁,C\n", encoding="utf-8")
    (q,) = load_questions(str(path), "mc_data").questions
    assert (q.question, q.answer, q.subject, q.names) == (
        "问题一",
        "C",
        "agronomy",
        ("agronomy", "agronomy"),
    )


def test_mmlu_jsonl_skips_repeated_header_rows(tmp_path):
    header = {"question": "question", "answer_a": "answer_a", "answer_b": "answer_b", "answer_c": "answer_c",
              "answer_d": "answer_d", "correct_answer": "answer", "topic": "college mathematics"}  # fmt: skip
    path = write_jsonl(
        tmp_path / "m.jsonl", [mmlu_row("q1", "abcd", "D"), header, mmlu_row("q2", "abcd", "a")]
    )
    got = load_questions(str(path), "mc_data")
    assert [q.answer for q in got.questions] == ["D", "A"]
    assert got.header_rows == 1 and got.records == 3


def test_hf_style_choices_list_and_index_answer(tmp_path):
    path = write_jsonl(tmp_path / "hf.jsonl", [{"question": "q", "choices": ["1", "2", "3", "4"], "answer": 3,
                                                "subject": "abstract_algebra"}])  # fmt: skip
    (q,) = load_questions(str(path), "mc_data").questions
    assert (q.choices, q.answer, q.names[0]) == (("1", "2", "3", "4"), "D", "abstract algebra")


def test_limit_and_skip_policy(tmp_path):
    rows = [mmlu_row("q1", "abcd", "A"), mmlu_row("q2", "abcd", "E"), mmlu_row("q3", "abcd", "B")]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    got = load_questions(str(path), "mc_data", on_bad_record="skip")
    assert [q.question for q in got.questions] == ["q1", "q3"]
    assert dict(got.skipped) == {"answer not in A-D": 1}
    assert len(load_questions(str(path), "mc_data", "skip", limit=1).questions) == 1


BAD = [
    (
        "ceval_val.csv",
        "id,question,A,B,C,D\n0,q,a,b,c,d\n",
        2,
        "no answer field (expected one of answer, correct_answer, label; the test split of C-Eval has no answers: use val)",
    ),
    (
        "ceval_val.csv",
        "id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n1,q,a,b,c,d,E\n",
        3,
        "answer 'E' is not one of A, B, C, D",
    ),
    ("m.jsonl", None, 2, "answer 'F' is not one of A, B, C, D"),
    ("x.csv", "id,question,A,B,C,answer\n0,q,a,b,c,A\n", 2, "no choice field 'd'"),
    (
        "x.jsonl",
        '{"question": "q", "answer_a": "a", "correct_answer": "A"\n',
        1,
        "invalid JSON: Expecting ',' delimiter (column 57)",
    ),
]


@pytest.mark.parametrize(("name", "text", "line", "message"), BAD)
def test_bad_benchmark_file_exits_2_naming_file_line(tmp_path, capsys, name, text, line, message):
    path = tmp_path / name
    if text is None:
        write_jsonl(path, [mmlu_row("q", "abcd", "A"), mmlu_row("q", "abcd", "F")])
    else:
        path.write_text(text, encoding="utf-8")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"model: /nonexistent/never-loaded\nmc_data: {path}\n", encoding="utf-8")
    code = main(["eval", str(cfg), f"eval_output_dir={tmp_path / 'out'}", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"danlu: error: {path}:{line}: {message}\n"
    assert not (tmp_path / "out").exists()  # input is checked before any model loads


def test_missing_benchmark_file_names_the_key(tmp_path):
    with pytest.raises(UsageError, match=r"^mc_dev: .*nope.csv: no such data file or directory$"):
        load_questions(str(tmp_path / "nope.csv"), "mc_dev")
