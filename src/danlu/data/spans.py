"""Where each model turn sits in the rendered text, and which tokens that makes trained (DESIGN §3).

The rule: a token is trained iff the model produced it, i.e. it lies in the text an assistant or
function_call turn adds after its header, up to and including the end-of-turn closer
(`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, EOS ...). The scaffolding after the closer (the
`\\n` before the next `<|im_start|>`), the headers and every other turn are not trained.

A turn's span is found by rendering, never by searching for its text:
- its end: render again with that turn's content replaced by a sentinel; the two renders differ
  exactly where the turn's body is (this also works when the template trims or rewrites the
  content, or renders tool calls in its own syntax), then the closer is taken if it follows;
- its start: the length of the render of the turns before it plus the generation prompt (the
  header), when the full render starts with that text (templates that rewrite history, such as
  Qwen3 or DeepSeek-R1, fall back to where the sentinel render first differs).
A token straddling a span boundary counts as trained (it carries a character the model produced).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import pairwise
from typing import Any

from danlu.data.templates import SENTINEL, Template

Span = tuple[int, int]


def model_turn_spans(
    tokenizer: Any, template: Template, hf: list[dict], rendered: str, tools: Any, turns: list[int]
) -> list[Span]:
    """Character spans [start, end) in `rendered` of the model turns at indices `turns` of `hf`."""
    closer = template.closer(tokenizer)
    return [_turn_span(tokenizer, template, hf, rendered, tools, i, closer) for i in turns]


def _turn_span(
    tokenizer: Any,
    template: Template,
    hf: list[dict],
    rendered: str,
    tools: Any,
    i: int,
    closer: str,
) -> Span:
    probe = [*hf[:i], {"role": "assistant", "content": SENTINEL}, *hf[i + 1 :]]
    other = template.render(tokenizer, probe, tools)
    first, body_end = _diff_region(rendered, other)
    start = first
    if i > 0:
        header = template.render(tokenizer, hf[:i], tools, generation_prompt=True)
        if len(header) <= first and rendered.startswith(header):
            start = len(header)
    end = body_end + len(closer) if closer and rendered.startswith(closer, body_end) else body_end
    return start, end


def _diff_region(a: str, b: str) -> Span:
    """[start, end) of `a` outside the longest common prefix and suffix of `a` and `b`."""
    p = _common_prefix_len(a, b)
    s = _common_prefix_len(a[p:][::-1], b[p:][::-1])
    return p, len(a) - s


def _common_prefix_len(a: str, b: str) -> int:
    """Binary search on slice equality: C-speed comparisons, O(n log n) characters at worst."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def tokenize_with_offsets(
    tokenizer: Any, text: str, spans: list[Span]
) -> tuple[list[int], list[Span]]:
    """Token ids of `text` (no added special tokens) and each token's character span."""
    if getattr(tokenizer, "is_fast", True):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    # Slow (Python) tokenizers give no offsets: tokenise the pieces between span boundaries apart.
    # Identical ids whenever no token crosses a boundary (boundaries are special tokens or
    # newlines in nearly every template).
    cuts = sorted({0, len(text), *(p for span in spans for p in span)})
    ids: list[int] = []
    offsets: list[Span] = []
    for a, b in pairwise(cuts):
        piece = tokenizer.encode(text[a:b], add_special_tokens=False)
        ids += piece
        offsets += [(a, b)] * len(piece)
    return ids, offsets


def label_tokens(ids: list[int], offsets: list[tuple[int, int]], spans: list[Span]) -> list[int]:
    """Labels: the token id where the token overlaps a span, else -100."""
    labels = [-100] * len(ids)
    starts = [s for s, _ in offsets]
    ends = [e for _, e in offsets]
    for a, b in spans:
        if b <= a:
            continue
        # first token ending after a .. last token starting before b (offsets are monotonic)
        for t in range(bisect_right(ends, a), bisect_left(starts, b)):
            labels[t] = ids[t]
    return labels
