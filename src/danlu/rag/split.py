"""Sections -> chunks that end at sentence ends, sized in tokens of the embedding model.

A chunk never cuts a sentence unless the sentence alone is longer than a chunk (then it is
cut at its clause marks, and only then by length). Sentences end at Chinese 。！？；… and
English . ! ? (before a space, a closing quote or bracket), and at line ends. Consecutive
chunks share up to `chunk_overlap` tokens of whole sentences. Each chunk carries its heading
path, which is also embedded with it ("Brewing > Green tea\n..."), so a paragraph keeps the
heading that gives it its meaning. With `parent_chunk_size`, sentences are first grouped into
parents of that size and each parent into chunks: the small chunk is what is matched, its
parent what the answer is given (seed 003's "key facts diluted in long chunks").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from danlu.rag.loaders import Section

Counter = Callable[[Sequence[str]], list[int]]
"""Token counts of a batch of texts (the embedding model's tokenizer, no special tokens)."""

_END = re.compile(
    r"(?<=[。！？；…])[”’」』）)]*"  # Chinese ends, with their closing quotes
    r"|(?<=[.!?;])[\"')\]]*(?=\s)"  # English ends before a space
    r"|\n+"
)
_CLAUSE = re.compile(r"(?<=[，,、：:])")


@dataclass(frozen=True)
class Chunk:
    headings: tuple[str, ...]
    text: str
    parent: str | None = None
    """The larger passage this chunk stands for in answers (parent-child chunking)."""

    def embedded_text(self) -> str:
        """What is embedded and matched: the heading path, then the text."""
        return titled(self.headings, self.text)


def titled(headings: Sequence[str], text: str) -> str:
    """`text` under its heading path: "Guide > Green tea\n..." (as embedded and shown)."""
    return f"{' > '.join(headings)}\n{text}" if headings else text


def sentences(text: str) -> list[str]:
    """The sentences of `text`, each with its end mark, whitespace-trimmed, none empty."""
    out, start = [], 0
    for match in _END.finditer(text):
        piece = text[start : match.end()].strip()
        if piece:
            out.append(piece)
        start = match.end()
    tail = text[start:].strip()
    return [*out, tail] if tail else out


def split(
    sections: Sequence[Section], count: Counter, size: int, overlap: int, parent_size: int = 0
) -> list[Chunk]:
    """The chunks of one document's sections, in order."""
    chunks: list[Chunk] = []
    for section in sections:
        heading = count([" > ".join(section.headings)])[0] + 1 if section.headings else 0
        budget = max(size - heading, size // 2)
        units = _fit(sentences(section.text), count, budget)
        if not units:
            continue
        if parent_size <= 0:
            chunks += [Chunk(section.headings, t) for t in _pack(units, budget, overlap)]
            continue
        for parent in _pack(units, max(parent_size - heading, budget), 0):
            inner = _fit(sentences(parent), count, budget)
            chunks += [Chunk(section.headings, t, parent) for t in _pack(inner, budget, overlap)]
    return chunks


def _fit(parts: list[str], count: Counter, budget: int) -> list[tuple[str, int]]:
    """(text, tokens) units no longer than `budget`: sentences, or the clauses / pieces of a
    sentence that is longer."""
    out: list[tuple[str, int]] = []
    for text, n in zip(parts, count(parts) if parts else [], strict=True):
        if n <= budget:
            out.append((text, n))
            continue
        clauses = [c for c in _CLAUSE.split(text) if c.strip()]
        if len(clauses) > 1:
            out += _fit(clauses, count, budget)
        else:
            out += _fit(_halves(text), count, budget)
    return out


def _halves(text: str) -> list[str]:
    middle = len(text) // 2
    space = text.rfind(" ", 0, middle)
    cut = space if space > len(text) // 4 else middle
    return [text[:cut].strip(), text[cut:].strip()]


def _pack(units: list[tuple[str, int]], budget: int, overlap: int) -> list[str]:
    """Greedy packing of units into texts of at most `budget` tokens; each text after the first
    begins with the previous one's last units, up to `overlap` tokens of them."""
    texts: list[str] = []
    current: list[tuple[str, int]] = []
    for unit in units:
        if current and sum(n for _, n in current) + unit[1] > budget:
            texts.append(_join(current))
            current = _tail(current, overlap, budget - unit[1])
        current.append(unit)
    if current:
        texts.append(_join(current))
    return texts


def _tail(units: list[tuple[str, int]], overlap: int, room: int) -> list[tuple[str, int]]:
    kept: list[tuple[str, int]] = []
    total = 0
    for text, n in reversed(units):
        if total + n > min(overlap, room):
            break
        kept.insert(0, (text, n))
        total += n
    return kept


def _join(units: list[tuple[str, int]]) -> str:
    """Chinese sentences join without a space, others with one."""
    out = ""
    for text, _ in units:
        if out and not (_cjk(out[-1]) or _cjk(text[0])):
            out += " "
        out += text
    return out


def _cjk(char: str) -> bool:
    return "\u3000" <= char <= "\u9fff" or "\uff00" <= char <= "\uffef"
