"""`eval_data` -> Conversations (through the data pipeline's readers) -> generation prompts.

Generation and perplexity read the same files as training can, with the same format detection,
column maps, `max_samples`, `system` and `on_bad_record` policy: `danlu.data.readers.read_source`
does all of it, so a file that trains also evaluates. Evaluation sets are small; they are held
in memory (capped by `eval_max_samples`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from danlu.data.types import MODEL_ROLES, Conversation


def read_conversations(
    sources: Sequence[Any], on_bad_record: str, limit: int | None
) -> tuple[list[Conversation], list[dict]]:
    """Conversations of every `eval_data` source in order (at most `limit`), and what each
    source's reader found (format, records, skipped) for the report."""
    from danlu.data.readers import SourceStats, read_source

    convs: list[Conversation] = []
    stats: list[dict] = []
    for index, src in enumerate(sources):
        if limit is not None and len(convs) >= limit:
            break
        found = SourceStats(src.path)
        for conv in read_source(src, found, on_bad_record, index):
            convs.append(conv)
            if limit is not None and len(convs) >= limit:
                break
        stats.append(dataclasses.asdict(found))
    return convs, stats


def as_chat(conv: Conversation) -> Conversation:
    """A pairwise record as the conversation that ends with its chosen answer; others unchanged."""
    if conv.chosen is None:
        return conv
    return dataclasses.replace(
        conv, messages=[*conv.messages, conv.chosen], chosen=None, rejected=None
    )


def template_for(spec: str, tokenizer: Any) -> Any:
    """`get_template(spec, tokenizer)`, memoised on the tokenizer (closer probing is not free)."""
    from danlu.data.templates import get_template

    cache = tokenizer.__dict__.setdefault("_danlu_eval_templates", {})
    if spec not in cache:
        cache[spec] = get_template(spec, tokenizer)
    return cache[spec]


@dataclass
class GenerationSet:
    """Prompts to generate from and the references they are scored against."""

    prompts: list[list[int]] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    truncated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


def split_reference(conv: Conversation) -> tuple[list[Any], str] | None:
    """(the turns before the last model turn, that turn's text), or None without a model turn.

    Turns after the last model turn (a trailing user question) are dropped: nothing answers them.
    """
    chat = as_chat(conv)
    last = max((i for i, m in enumerate(chat.messages) if m.role in MODEL_ROLES), default=None)
    if last is None or last == 0:
        return None
    return chat.messages[:last], chat.messages[last].content


def build_generation_set(
    convs: Sequence[Conversation], tokenizer: Any, template_spec: str, cutoff_len: int
) -> GenerationSet:
    """Render each prompt with the chat template and its generation prompt, as inference does.

    A prompt longer than `cutoff_len` tokens keeps its last `cutoff_len` tokens (counted).
    """
    from danlu.data.templates import to_hf_messages, tools_of

    out = GenerationSet()
    for conv in convs:
        if conv.text is not None:
            out.dropped["text record (no reference answer)"] += 1
            continue
        split = split_reference(conv)
        if split is None:
            out.dropped["no assistant turn to use as the reference"] += 1
            continue
        prompt, reference = split
        template = template_for(template_spec, tokenizer)
        text = template.render(
            tokenizer, to_hf_messages(prompt, template), tools_of(conv), generation_prompt=True
        )
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) > cutoff_len:
            ids, out.truncated = ids[-cutoff_len:], out.truncated + 1
        out.prompts.append(ids)
        out.references.append(reference)
        out.sources.append(conv.source)
    return out
