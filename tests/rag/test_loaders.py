"""Loaders keep what a reader sees under the headings it sits in: never script or style, every
encoding Chinese corpora come in, and a file that cannot be read named with its reason."""

from __future__ import annotations

import json

import pytest

from danlu.rag.loaders import LoadError, Section, find_files, load
from danlu.utils.errors import UsageError


def test_html_keeps_visible_text_under_its_headings(tmp_path):
    page = tmp_path / "tea.html"
    page.write_text(
        "<html><head><title>T</title><style>p {color: red}</style></head><body>"
        "<script>var secret = 'never indexed';</script>"
        "<h1>Tea</h1><p>Intro &amp; more.</p><h2>Green</h2><p>Use 80 &deg;C water.</p>"
        "<noscript>enable js</noscript><h2>Black</h2><div>Use 95 °C.</div></body></html>",
        encoding="utf-8",
    )
    assert load(page) == [
        Section(("Tea",), "Intro & more."),
        Section(("Tea", "Green"), "Use 80 °C water."),
        Section(("Tea", "Black"), "Use 95 °C."),
    ]


def test_markdown_heading_paths_and_fenced_hashes(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("Preface.\n# One\ntext 1\n## Two\n```\n# not a heading\n```\n### Three\nt3\n"
                   "# Four\nt4\n", encoding="utf-8")  # fmt: skip
    assert load(doc) == [
        Section((), "Preface."),
        Section(("One",), "text 1"),
        Section(("One", "Two"), "```\n# not a heading\n```"),
        Section(("One", "Two", "Three"), "t3"),
        Section(("Four",), "t4"),
    ]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_chinese_text_in_each_encoding(tmp_path, encoding):
    doc = tmp_path / "zh.txt"
    doc.write_bytes("绿茶用八十度的水。".encode(encoding))
    assert load(doc) == [Section((), "绿茶用八十度的水。")]


def test_binary_and_bad_records_are_named(tmp_path):
    blob = tmp_path / "x.txt"
    blob.write_bytes(b"\x00\xff\xfe binary")
    with pytest.raises(LoadError, match="not UTF-8 or GB18030 text"):
        load(blob)
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"title": "T", "text": "body"}) + "\n\n{bad\n", encoding="utf-8")
    with pytest.raises(LoadError, match=r"^line 3: not JSON"):
        load(records)
    records.write_text(json.dumps({"title": "T", "text": "body"}) + "\n", encoding="utf-8")
    assert load(records) == [Section(("T",), "body")]
    records.write_text(json.dumps({"body": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(LoadError, match="line 1: a record needs a 'text'"):
        load(records)


def test_pdf_text_layer_and_a_file_that_is_not_a_pdf(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    fake = tmp_path / "fake.pdf"
    fake.write_text("hello", encoding="utf-8")
    with pytest.raises(LoadError, match="not a readable PDF"):
        load(fake)
    blank = tmp_path / "blank.pdf"
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=72, height=72)
    with blank.open("wb") as f:
        writer.write(f)
    with pytest.raises(LoadError, match="no text layer"):
        load(blank)


def test_docx_headings(tmp_path):
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.add_heading("Tea", level=1)
    document.add_paragraph("Intro.")
    document.add_heading("Green", level=2)
    document.add_paragraph("80 °C.")
    document.save(tmp_path / "t.docx")
    assert load(tmp_path / "t.docx") == [
        Section(("Tea",), "Intro."),
        Section(("Tea", "Green"), "80 °C."),
    ]


def test_folders_recursively_other_types_counted(tmp_path):
    (tmp_path / "sub" / ".git").mkdir(parents=True)
    for name in ("a.md", "sub/b.txt", "sub/c.png", "sub/.git/config.txt", ".hidden.md"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    files, other = find_files([str(tmp_path)])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.md", "sub/b.txt"]
    assert other == 1
    with pytest.raises(UsageError, match=r"^docs: .*/missing: no such file or folder$"):
        find_files([str(tmp_path / "missing")])
