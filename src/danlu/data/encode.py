"""Conversation -> input_ids + labels, with the loss mask and truncation of DESIGN §3.

Token ids are exactly `tokenizer.apply_chat_template(messages, tokenize=True)`: the rendered text
tokenised once without added special tokens (the template writes BOS itself where it wants one).
One exception: a template with no end-of-turn text after the assistant (GLM-4) would never teach
the model to stop, so the tokenizer's EOS is appended (trained) when the conversation ends with a
model turn, as LLaMA-Factory does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from danlu.config.sections import DataArgs
from danlu.data.spans import label_tokens, model_turn_spans, tokenize_with_offsets
from danlu.data.templates import Template, to_hf_messages, tools_of
from danlu.data.truncate import cap_lengths, cap_split, first_trained, has_trained, split_rounds
from danlu.data.types import MODEL_ROLES, Conversation, Message

NO_TRAINED = "no trained token after truncation"
NO_ASSISTANT = "no assistant turn"
EMPTY_TEXT = "empty text"


@dataclass
class EncodeResult:
    input_ids: list[int]
    labels: list[int]
    """Token id where trained, -100 elsewhere; same length as input_ids (unshifted)."""
    truncated: bool = False
    dropped: str | None = None
    """Why the sample must not be used (e.g. 'no trained token after truncation'), else None."""


def encode_conversation(
    conv: Conversation, tokenizer: Any, template: Template, args: DataArgs, stage: str = "sft"
) -> EncodeResult:
    """Tokens and labels of one sample for `stage` pt or sft (rm/dpo: see `encode_pair`)."""
    if stage == "pt":
        return encode_document(conv, tokenizer, template, args)
    if stage not in ("sft",):
        raise ValueError(f"encode_conversation: stage {stage!r} needs encode_pair")
    if not any(m.role in MODEL_ROLES for m in conv.messages):
        return EncodeResult([], [], dropped=NO_ASSISTANT)
    return _encode_truncated(
        conv.messages, tools_of(conv), tokenizer, template, args, args.train_on
    )


def encode_messages(
    messages: list[Message], tools: Any, tokenizer: Any, template: Template, train_on: str
) -> EncodeResult:
    """Tokens and labels of `messages` rendered whole, without truncation."""
    hf = to_hf_messages(messages, template)
    text = template.render(tokenizer, hf, tools)
    turns = [i for i, m in enumerate(messages) if m.role in MODEL_ROLES]
    if train_on == "last_turn":
        turns = turns[-1:]
    spans = model_turn_spans(tokenizer, template, hf, text, tools, turns)
    ids, offsets = tokenize_with_offsets(tokenizer, text, spans)
    labels = label_tokens(ids, offsets, spans)
    ends_with_model = bool(turns) and turns[-1] == len(messages) - 1
    if ends_with_model and not template.closer(tokenizer) and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    return EncodeResult(ids, labels)


def _encode_truncated(
    messages: list[Message],
    tools: Any,
    tokenizer: Any,
    template: Template,
    args: DataArgs,
    train_on: str,
) -> EncodeResult:
    system, rounds = split_rounds(messages)
    res = encode_messages(messages, tools, tokenizer, template, train_on)
    truncated = False
    while len(res.input_ids) > args.cutoff_len and len(rounds) > 1:
        rounds = rounds[1:]  # the oldest round goes first; the system prompt stays
        truncated = True
        res = encode_messages(system + _flat(rounds), tools, tokenizer, template, train_on)
    ids, labels, cut = cap_lengths(
        res.input_ids, res.labels, args.cutoff_len, args.max_source_len, args.max_target_len
    )
    dropped = None if has_trained(labels) else NO_TRAINED
    return EncodeResult(ids, labels, truncated or cut, dropped)


def _flat(rounds: list[list[Message]]) -> list[Message]:
    return [m for r in rounds for m in r]


def encode_document(
    conv: Conversation, tokenizer: Any, template: Template, args: DataArgs
) -> EncodeResult:
    """`stage: pt`: every token trained, EOS appended; text beyond cutoff_len is cut off."""
    if conv.text is not None:
        ids = list(tokenizer(conv.text, add_special_tokens=True)["input_ids"]) if conv.text else []
    else:  # a chat record used for pretraining: its rendered text, every token trained
        hf = to_hf_messages(conv.messages, template)
        text = template.render(tokenizer, hf, tools_of(conv)) if hf else ""
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        return EncodeResult([], [], dropped=EMPTY_TEXT)
    eos = tokenizer.eos_token_id
    if eos is not None and ids[-1] != eos:
        ids.append(eos)
    truncated = len(ids) > args.cutoff_len
    ids = ids[: args.cutoff_len]
    return EncodeResult(ids, list(ids), truncated)


@dataclass
class PairResult:
    """A preference pair: both full sequences share the prompt `input_ids[:prompt_len]`."""

    prompt_len: int
    chosen: EncodeResult
    rejected: EncodeResult
    truncated: bool = False
    dropped: str | None = None

    @property
    def prompt_ids(self) -> list[int]:
        return self.chosen.input_ids[: self.prompt_len]


def encode_pair(
    conv: Conversation, tokenizer: Any, template: Template, args: DataArgs
) -> PairResult:
    """`stage: rm | dpo`: prompt + chosen and prompt + rejected, only the final answer trained.

    Both are truncated together (same rounds dropped, same source cut) so they keep one prompt.
    """
    if conv.chosen is None or conv.rejected is None:
        raise ValueError(f"{conv.source}: encode_pair needs chosen and rejected")
    tools = tools_of(conv)
    system, rounds = split_rounds(conv.messages)
    pair = _encode_pair(conv.messages, conv, tools, tokenizer, template)
    truncated = False
    while _longest(pair) > args.cutoff_len and len(rounds) > 1:
        rounds, truncated = rounds[1:], True
        pair = _encode_pair(system + _flat(rounds), conv, tools, tokenizer, template)
    return _cap_pair(pair, args, truncated)


def _encode_pair(
    prompt: list[Message], conv: Conversation, tools: Any, tokenizer: Any, template: Template
) -> tuple[EncodeResult, EncodeResult]:
    return tuple(  # type: ignore[return-value]
        encode_messages([*prompt, answer], tools, tokenizer, template, "last_turn")
        for answer in (conv.chosen, conv.rejected)
    )


def _longest(pair: tuple[EncodeResult, EncodeResult]) -> int:
    return max(len(r.input_ids) for r in pair)


def _cap_pair(
    pair: tuple[EncodeResult, EncodeResult], args: DataArgs, truncated: bool
) -> PairResult:
    # The shared prompt is capped once, against the longer of the two answers.
    k = min(first_trained(r.labels) for r in pair)
    n_tgt = max(len(r.input_ids) - k for r in pair)
    keep_src, keep_tgt = cap_split(
        k, n_tgt, args.cutoff_len, args.max_source_len, args.max_target_len
    )
    cut = truncated or keep_src < k or any(len(r.input_ids) - k > keep_tgt for r in pair)
    out = [
        EncodeResult(
            r.input_ids[k - keep_src : k + keep_tgt], r.labels[k - keep_src : k + keep_tgt], cut
        )
        for r in pair
    ]
    dropped = None if all(has_trained(r.labels) for r in out) else NO_TRAINED
    return PairResult(keep_src, out[0], out[1], cut, dropped)


@dataclass
class LabelledResult(EncodeResult):
    """`stage: kto`: one answer (the last turn, the only trained one) and its label."""

    label: bool = True


def encode_labelled(
    conv: Conversation, tokenizer: Any, template: Template, args: DataArgs
) -> LabelledResult:
    res = _encode_truncated(conv.messages, tools_of(conv), tokenizer, template, args, "last_turn")
    return LabelledResult(**vars(res), label=bool(conv.meta["kto_label"]))


@dataclass
class PromptResult:
    """`stage: grpo`: the rendered prompt up to the generation header, and what the reward
    functions get: the record's prompt and its other columns (JSON)."""

    input_ids: list[int]
    prompt: str
    columns: str
    truncated: bool = False
    dropped: str | None = None


def encode_prompt(
    conv: Conversation, tokenizer: Any, template: Template, args: DataArgs
) -> PromptResult:
    """Oldest rounds are dropped (system kept) while the prompt exceeds max_source_len (else
    cutoff_len); then its start is cut, so the generation header always survives."""
    import json

    limit = args.max_source_len or args.cutoff_len
    tools = tools_of(conv)
    system, rounds = split_rounds(conv.messages)
    ids = _prompt_ids(conv.messages, tools, tokenizer, template)
    truncated = False
    while len(ids) > limit and len(rounds) > 1:
        rounds, truncated = rounds[1:], True
        ids = _prompt_ids(system + _flat(rounds), tools, tokenizer, template)
    if len(ids) > limit:
        ids, truncated = ids[-limit:], True
    dump = lambda v: json.dumps(v, ensure_ascii=False, default=str)  # noqa: E731
    return PromptResult(ids, dump(conv.meta["prompt"]), dump(conv.meta["columns"]), truncated)


def _prompt_ids(messages: list[Message], tools: Any, tokenizer: Any, template: Template) -> list:
    text = template.render(tokenizer, to_hf_messages(messages, template), tools, True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
