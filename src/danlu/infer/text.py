"""Token ids -> text, incrementally: streamed deltas that never split a character, and stop strings.

Byte-level BPE vocabularies (SmolLM2, Qwen, LLaMA-3) split one Chinese character or emoji over
several tokens; decoding token by token would emit U+FFFD halves. The detokenizer decodes a small
window and holds text back while it ends in an incomplete character (vLLM/TGI's method), so
every delta is whole characters and the deltas concatenate to exactly the final decode.
"""

from __future__ import annotations

import contextlib
import functools
import re
from typing import Any

REPLACEMENT = "\ufffd"
_CONTEXT = 5
"""Prompt tokens kept as decode context, so SentencePiece's leading space survives."""


class Detokenizer:
    """Feed token ids one at a time; get back the text each one completes ('' while pending)."""

    def __init__(self, tokenizer: Any, context: list[int] | None = None, skip_special: bool = True):
        self.tokenizer = tokenizer
        self.drop = hidden_ids(tokenizer) if skip_special else frozenset()
        self.ids: list[int] = list(context[-_CONTEXT:]) if context else []
        self.prefix = 0
        self.read = len(self.ids)

    def _decode(self, ids: list[int]) -> str:
        kept = [i for i in ids if i not in self.drop] if self.drop else ids
        return self.tokenizer.decode(kept, skip_special_tokens=False)

    def add(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (a truly incomplete character comes out as U+FFFD)."""
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]


KEPT_SPECIAL = ("<think>", "</think>")
"""Special tokens whose text answers keep: reasoning tags, which the server splits off into
reasoning_content (a tokenizer may mark them special, and skipping would merge the reasoning
into the content)."""


def hidden_ids(tokenizer: Any) -> frozenset[int]:
    """The ids `skip_special_tokens` removes from text, less the reasoning tags; memoised on
    the tokenizer."""
    cached = tokenizer.__dict__.get("_danlu_hidden_ids")
    if cached is None:
        special = set(tokenizer.all_special_ids)
        special |= {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        keep = {
            tokenizer.convert_tokens_to_ids(t)
            for t in KEPT_SPECIAL
            if t in tokenizer.get_added_vocab()
        }
        cached = tokenizer.__dict__["_danlu_hidden_ids"] = frozenset(special - keep)
    return cached


class StopChecker:
    """Finds stop strings across delta boundaries and holds back text that may start one."""

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self.emitted = 0

    def feed(self, delta: str) -> tuple[str, bool]:
        """(text safe to emit now, whether a stop string was reached)."""
        self.text += delta
        if not self.stops:
            return self._emit_to(len(self.text)), False
        start = max(0, self.emitted - self.longest + 1)
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            cut = min(hits)
            out = self._emit_to(cut)
            self.text = self.text[:cut]
            return out, True
        return self._emit_to(len(self.text) - self._partial_len()), False

    def flush(self) -> str:
        return self._emit_to(len(self.text))

    def _emit_to(self, end: int) -> str:
        end = max(end, self.emitted)
        out = self.text[self.emitted : end]
        self.emitted = end
        return out

    def _partial_len(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        return max((partial_suffix(self.text, s) for s in self.stops), default=0)


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`: what a stream must
    hold back while it may still become `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character -> byte table (byte-level BPE token strings use it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _vocab_kind(tokenizer: Any) -> tuple[bool, frozenset[str]]:
    """(uses GPT-2 byte-level pieces, special token strings), probed once per tokenizer."""
    cached = getattr(tokenizer, "_danlu_vocab_kind", None)
    if cached is None:
        ids = tokenizer.encode(" a", add_special_tokens=False)
        pieces = tokenizer.convert_ids_to_tokens(ids)
        cached = (any("Ġ" in p for p in pieces), frozenset(tokenizer.all_special_tokens))
        with contextlib.suppress(AttributeError):  # one that refuses attributes: probe each time
            tokenizer._danlu_vocab_kind = cached
    return cached


_SP_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The raw bytes one token stands for (what OpenAI's `bytes` logprob field reports)."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if piece is None:
        return b""
    byte_level, specials = _vocab_kind(tokenizer)
    table = _byte_decoder()
    if byte_level and piece not in specials and all(ch in table for ch in piece):
        return bytes(table[ch] for ch in piece)
    m = _SP_BYTE.match(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    return tokenizer.decode([int(token_id)], skip_special_tokens=False).encode("utf-8")


def token_text(tokenizer: Any, token_id: int) -> str:
    """A token as text; a partial UTF-8 character becomes `bytes:\\xe4\\xb8` as in OpenAI's API."""
    raw = token_bytes(tokenizer, token_id)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
