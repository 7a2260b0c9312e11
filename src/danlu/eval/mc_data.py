"""Multiple-choice benchmark files -> Questions, with file:line errors for bad rows.

Layouts read (any mix; one record per row/line; field names are case-insensitive):

| layout | question | choices | answer | subject |
|---|---|---|---|---|
| C-Eval CSV (`{subject}_val.csv`: id, question, A-D, answer, explanation) | question | A, B, C, D | answer (A-D) | file name without `_val`/`_dev`/`_test` |
| CMMLU CSV (`{subject}.csv`: "", Question, A-D, Answer) | Question | A, B, C, D | Answer | file name |
| MMLU JSONL (as ../shared/data/mmlu_test.jsonl) | question | answer_a..answer_d | correct_answer | topic |
| HF-style JSON/JSONL | question | choices (list of 4) | answer (A-D or 0-3) | subject |

A row whose question field holds "question" and whose answer field holds an answer column's
name (a header repeated inside concatenated files) is skipped and counted, never scored. A subject's display name comes from a
C-Eval `subject_mapping.json` ({key: [English, 中文, category]}) beside the files or up to two
folders above, else the key with `_` as spaces.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from danlu.data.bad import BadRecord, BadRecordPolicy
from danlu.utils.errors import UsageError

LETTERS = ("A", "B", "C", "D")
_QUESTION = ("question",)
_ANSWER = ("answer", "correct_answer", "label")
_SUBJECT = ("subject", "topic")
_CHOICE_SETS = (("a", "b", "c", "d"), ("answer_a", "answer_b", "answer_c", "answer_d"))
_SPLIT_SUFFIXES = ("_val", "_dev", "_test", "_validation", "_train")


@dataclass
class Question:
    question: str
    choices: tuple[str, str, str, str]
    answer: str
    """The correct letter, A-D."""
    subject: str
    """Grouping key (per-subject accuracy, few-shot examples)."""
    source: str
    """`file:line` of the record."""
    names: tuple[str, str] = ("", "")
    """Display name of the subject in English and Chinese, for the prompt."""


@dataclass
class QuestionSet:
    questions: list[Question] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    records: int = 0
    header_rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def load_questions(
    spec: str, key: str, on_bad_record: str = "error", limit: int | None = None
) -> QuestionSet:
    """Every question under `spec` (file, folder or glob) in file order, at most `limit`.

    `key` names the config key in errors (mc_data / mc_dev).
    """
    from danlu.data.files import records_of, resolve_files

    try:
        files = resolve_files(spec)
    except UsageError as e:
        raise UsageError(f"{key}: {e}") from None
    out, policy, names = QuestionSet(), BadRecordPolicy(on_bad_record), _SubjectNames()
    for path in files:
        out.files.append(str(path))
        for line, raw in records_of(path):
            if limit is not None and len(out.questions) >= limit:
                return _finish(out, policy, spec, key)
            out.records += 1
            where = f"{path}:{line}"
            try:
                q = _parse(raw, path, where)
            except BadRecord as bad:
                policy.handle(where, bad)
                continue
            if q is None:
                out.header_rows += 1
                continue
            q.names = names.lookup(path, q.subject)
            out.questions.append(q)
    return _finish(out, policy, spec, key)


def _finish(out: QuestionSet, policy: BadRecordPolicy, spec: str, key: str) -> QuestionSet:
    out.skipped = Counter(policy.skipped)
    if not out.questions:
        raise UsageError(f"{key}: {spec}: no questions ({out.records} records read)")
    return out


def _parse(raw: Any, path: Path, where: str) -> Question | None:
    """One record -> Question; None for a repeated header row; BadRecord when unusable."""
    if isinstance(raw, BadRecord):
        raise raw
    if not isinstance(raw, dict):
        raise BadRecord(
            "not an object",
            f"expected an object with question, choices and answer, got {type(raw).__name__}",
        )
    rec = {str(k).strip().lower(): v for k, v in raw.items() if k is not None}
    q_key = _first(rec, _QUESTION)
    a_key = _first(rec, _ANSWER)
    if q_key is None:
        raise BadRecord("missing question", f"no question field (fields: {', '.join(sorted(rec))})")
    if a_key is None:
        raise BadRecord("missing answer", f"no answer field (expected one of {', '.join(_ANSWER)}; "
                                          "the test split of C-Eval has no answers: use val)")  # fmt: skip
    if _is_header(rec, q_key, a_key):
        return None
    subject_key = _first(rec, _SUBJECT)
    subject = str(rec[subject_key]).strip() if subject_key else _subject_from_file(path)
    return Question(str(rec[q_key]), _choices(rec), _answer(rec[a_key]), subject, where)


def _first(rec: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in rec and rec[k] is not None), None)


def _is_header(rec: dict[str, Any], q_key: str, a_key: str) -> bool:
    """The question holds its column name and the answer holds an answer column's name (the
    shared MMLU file has `"correct_answer": "answer"` rows from concatenated CSVs)."""
    return str(rec[q_key]).strip().lower() == q_key and str(rec[a_key]).strip().lower() in _ANSWER


def _choices(rec: dict[str, Any]) -> tuple[str, str, str, str]:
    if isinstance(rec.get("choices"), list):
        got = rec["choices"]
        if len(got) != 4:
            raise BadRecord("not 4 choices", f"expected 4 choices, got {len(got)}")
        return tuple(str(c) for c in got)  # type: ignore[return-value]
    for keys in _CHOICE_SETS:
        if any(k in rec for k in keys):
            missing = [k for k in keys if rec.get(k) is None]
            if missing:
                raise BadRecord("missing choice", f"no choice field '{missing[0]}'")
            return tuple(str(rec[k]) for k in keys)  # type: ignore[return-value]
    raise BadRecord(
        "missing choice", "no choices (expected columns A-D, answer_a-answer_d or a choices list)"
    )


def _answer(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 4:
        return LETTERS[value]
    text = str(value).strip().upper()
    if text not in LETTERS:
        raise BadRecord("answer not in A-D", f"answer {value!r} is not one of A, B, C, D")
    return text


def _subject_from_file(path: Path) -> str:
    stem = path.stem
    for suffix in _SPLIT_SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


class _SubjectNames:
    """subject key -> (English, Chinese) display names, from C-Eval's subject_mapping.json."""

    def __init__(self) -> None:
        self._maps: dict[Path, dict[str, Any]] = {}

    def lookup(self, path: Path, subject: str) -> tuple[str, str]:
        plain = subject.replace("_", " ")
        for folder in list(path.resolve().parents)[:3]:
            entry = self._mapping(folder).get(subject)
            if isinstance(entry, list) and len(entry) >= 2:
                return str(entry[0]), str(entry[1])
        return plain, plain

    def _mapping(self, folder: Path) -> dict[str, Any]:
        if folder not in self._maps:
            file = folder / "subject_mapping.json"
            try:
                data = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
            except (OSError, ValueError) as e:
                raise UsageError(f"{file}: not a JSON mapping of subject names ({e})") from None
            self._maps[folder] = data if isinstance(data, dict) else {}
        return self._maps[folder]
