"""Documents in, sections out: each file becomes a list of (heading path, text) sections.

Loaders keep what a reader sees and the headings it sits under (seed 003: a paragraph cut off
from its heading loses its meaning): Markdown `#` headings, HTML `<h1>`..`<h6>` (visible text
only: no script, style, template or head), PDF pages (the text layer, via pypdf), `.docx`
paragraphs with their Heading styles (python-docx, optional), and `.jsonl` records (one
section per line, its `title` as the heading). Text files are decoded as UTF-8 (with or
without BOM) or GB18030, the two encodings Chinese corpora come in; a file that is neither is
reported by name, never a crash of the whole index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".jsonl")
"""What `danlu rag index` reads; other files in a folder are passed over (and counted)."""


@dataclass(frozen=True)
class Section:
    headings: tuple[str, ...]
    """The heading path this text sits under, outermost first (empty: none)."""
    text: str


class LoadError(Exception):
    """One file could not be read: the index goes on without it and says so."""


def find_files(paths: list[str]) -> tuple[list[Path], int]:
    """(the readable files under `paths`, sorted, and how many other files were passed over).
    A path that does not exist is a UsageError naming it."""
    found: list[Path] = []
    other = 0
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise UsageError(f"docs: {raw}: no such file or folder")
        if path.is_file():
            found.append(path.resolve())
            continue
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in item.relative_to(path).parts):
                continue  # .git, editor swap files
            if item.suffix.lower() in SUFFIXES:
                found.append(item.resolve())
            else:
                other += 1
    return sorted(set(found)), other


def load(path: Path) -> list[Section]:
    """The sections of one file; LoadError (naming the reason) when it cannot be read."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".pdf":
            return _pdf(path)
        if suffix == ".docx":
            return _docx(path)
        text = decode(path.read_bytes(), path)
    except OSError as exc:
        raise LoadError(exc.strerror or str(exc)) from exc
    if suffix in (".md", ".markdown"):
        return list(_markdown(text))
    if suffix in (".html", ".htm"):
        return _html(text)
    if suffix == ".jsonl":
        return list(_jsonl(text))
    return [Section((), text)]


def decode(data: bytes, path: Path) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            return text
    raise LoadError("not UTF-8 or GB18030 text")


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _by_headings(items: Iterable[tuple[int | None, str]]) -> Iterator[Section]:
    """Sections from a document's (heading level, title) and (None, line) items, in order: a
    heading of level n ends the text before it and replaces the path from depth n on."""
    path: list[str] = []
    lines: list[str] = []
    for level, text in items:
        if level is None:
            lines.append(text)
            continue
        if "".join(lines).strip():
            yield Section(tuple(path), "\n".join(lines).strip())
        lines = []
        path = [*path[: level - 1], text]
    if "".join(lines).strip():
        yield Section(tuple(path), "\n".join(lines).strip())


def _markdown(text: str) -> Iterator[Section]:
    return _by_headings(_markdown_items(text))


def _markdown_items(text: str) -> Iterator[tuple[int | None, str]]:
    fenced = False
    for line in text.splitlines():
        fenced ^= line.lstrip().startswith("```")
        match = None if fenced else _HEADING.match(line)
        yield (None, line) if match is None else (len(match.group(1)), match.group(2))


class _Visible(HTMLParser):
    """Visible text of an HTML page, split at its headings."""

    HIDDEN = frozenset({"script", "style", "template", "head", "noscript", "svg"})
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "section", "article", "pre", "table", "ul"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.path: list[str] = []
        self.parts: list[str] = []
        self.hidden = 0
        self.heading: tuple[int, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.heading = (int(tag[1]), [])
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self.heading is not None:
            level, words = self.heading
            self.path = [*self.path[: level - 1], " ".join("".join(words).split())]
            self.heading = None

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        (self.heading[1] if self.heading is not None else self.parts).append(data)

    def _flush(self) -> None:
        text = re.sub(r"[ \t]+", " ", "".join(self.parts))
        text = re.sub(r"\s*\n\s*", "\n", text).strip()
        if text:
            self.sections.append(Section(tuple(self.path), text))
        self.parts = []


def _html(text: str) -> list[Section]:
    parser = _Visible()
    parser.feed(text)
    parser.close()
    parser._flush()
    return parser.sections


def _jsonl(text: str) -> Iterator[Section]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LoadError(f"line {number}: not JSON ({exc.msg})") from exc
        body = record.get("text", record.get("content")) if isinstance(record, dict) else None
        if not isinstance(body, str):
            raise LoadError(f"line {number}: a record needs a 'text' (or 'content') string")
        title = record.get("title")
        yield Section((str(title),) if title else (), body)


def _pdf(path: Path) -> list[Section]:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:
        raise LoadError("reading PDF needs pypdf: pip install 'danlu[rag]'") from exc
    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise LoadError(f"not a readable PDF ({exc})") from exc
    sections = [Section((f"page {i}",), t.strip()) for i, t in enumerate(pages, 1) if t.strip()]
    if not sections and pages:
        raise LoadError("the PDF has no text layer (a scan? run OCR first)")
    return sections


def _docx(path: Path) -> list[Section]:
    try:
        import docx
    except ImportError as exc:
        raise LoadError("reading .docx needs python-docx: pip install 'danlu[rag]'") from exc
    try:
        document = docx.Document(str(path))
    except Exception as exc:  # python-docx raises zipfile/KeyError/ValueError kinds for bad files
        raise LoadError(f"not a readable .docx ({type(exc).__name__})") from exc
    return list(_by_headings(_docx_items(document)))


def _docx_items(document: Any) -> Iterator[tuple[int | None, str]]:
    for para in document.paragraphs:
        style = (para.style.name or "") if para.style is not None else ""
        level = re.fullmatch(r"Heading (\d)", style)
        yield (None, para.text) if level is None else (int(level.group(1)), para.text.strip())
