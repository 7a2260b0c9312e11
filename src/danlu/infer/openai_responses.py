"""OpenAI response bodies (whole and streamed chunks) from the engine's completions/events.

Shapes follow OpenAI's API field for field: ids `chatcmpl-`/`cmpl-`, `object`, `created`,
`choices` with `finish_reason` 'stop'/'length', `usage`; chat logprobs as `content` entries with
bytes; completion logprobs in the legacy shape (tokens, token_logprobs, top_logprobs dicts,
text_offset) that lm-evaluation-harness reads.
"""

from __future__ import annotations

from typing import Any

from danlu.infer.answer import AnswerStream, message
from danlu.infer.engine import Completion, Engine
from danlu.infer.openai_api import Job
from danlu.infer.requests import Output
from danlu.infer.sampling import TokenLogprob
from danlu.infer.text import Detokenizer, token_bytes, token_text


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_response(job: Job, engine: Engine, done: list[Completion]) -> dict[str, Any]:
    choices = []
    for c in done:
        msg, finish = message(job.rules, c.text, c.finish_reason)
        choices.append({
            "index": c.index,
            "message": msg,
            "logprobs": chat_logprobs(engine, c.logprobs) if job.chat_logprobs else None,
            "finish_reason": finish,
        })  # fmt: skip
    return {
        "id": job.response_id,
        "object": "chat.completion",
        "created": job.created,
        "model": job.model,
        "choices": choices,
        "usage": usage(sum(len(p) for p in job.prompts), sum(len(c.tokens) for c in done)),
        **job.extra,
    }


def chat_chunk(
    job: Job, engine: Engine, out: Output | None, *, index: int = 0, first: bool = False,
    stream: AnswerStream | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A `chat.completion.chunk`: the role announcement (`first`), a delta, or the final one.
    `stream` (the choice's AnswerStream) splits reasoning and tool calls off the text."""
    if first:
        delta: dict[str, Any] = {"role": "assistant", "content": ""}
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
    else:
        assert out is not None
        finish = out.finish_reason
        if stream is None:
            delta = {"content": out.text} if out.text or finish is None else {}
        elif finish is None:
            delta = stream.feed(out.text)
        else:
            delta, finish = stream.finish(out.text, finish)
        if finish is None and not delta:
            delta = {"content": ""}  # a held-back piece: still a chunk, so logprobs flow
        logprobs = (
            chat_logprobs(engine, out.logprobs) if job.chat_logprobs and out.logprobs else None
        )
        choice = {"index": out.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    chunk = _chunk(job, "chat.completion.chunk", [choice])
    return {**chunk, **job.extra} if first and index == 0 else chunk


def completion_response(job: Job, engine: Engine, done: list[Completion]) -> dict[str, Any]:
    choices = []
    for c in done:
        prompt = job.prompts[c.index // job.n]
        text = (engine.tokenizer.decode(prompt) if job.echo else "") + c.text
        choices.append(
            {
                "text": text,
                "index": c.index,
                "logprobs": completion_logprobs(job, engine, prompt, c)
                if job.params.logprobs is not None
                else None,
                "finish_reason": c.finish_reason,
            }
        )
    return {
        "id": job.response_id,
        "object": "text_completion",
        "created": job.created,
        "model": job.model,
        "choices": choices,
        "usage": usage(sum(len(p) for p in job.prompts), sum(len(c.tokens) for c in done)),
    }


def completion_chunk(
    job: Job, engine: Engine, out: Output, *, first: bool = False
) -> dict[str, Any]:
    """A streamed `text_completion`; a choice's `first` chunk carries the echoed prompt."""
    prompt = job.prompts[out.index // job.n]
    echo = job.echo and first
    text = (engine.tokenizer.decode(prompt) if echo else "") + out.text
    logprobs = None
    if job.params.logprobs is not None:
        part = Completion(
            out.index,
            out.text,
            out.tokens,
            out.logprobs,
            out.finish_reason,
            out.prompt_logprobs if echo else None,
        )
        logprobs = completion_logprobs(job, engine, prompt, part)
    choice = {
        "text": text,
        "index": out.index,
        "logprobs": logprobs,
        "finish_reason": out.finish_reason,
    }
    return _chunk(job, "text_completion", [choice])


def usage_chunk(job: Job, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    chunk = _chunk(job, "chat.completion.chunk" if job.kind == "chat" else "text_completion", [])
    chunk["usage"] = usage(prompt_tokens, completion_tokens)
    return chunk


def _chunk(job: Job, obj: str, choices: list[dict]) -> dict[str, Any]:
    return {
        "id": job.response_id,
        "object": obj,
        "created": job.created,
        "model": job.model,
        "choices": choices,
    }


def chat_logprobs(engine: Engine, entries: list[TokenLogprob]) -> dict[str, Any]:
    tok = engine.tokenizer

    def item(token: int, logprob: float) -> dict[str, Any]:
        return {
            "token": token_text(tok, token),
            "logprob": logprob,
            "bytes": list(token_bytes(tok, token)),
        }

    return {
        "content": [
            {**item(e.token, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
            for e in entries
        ]
    }


def completion_logprobs(
    job: Job, engine: Engine, prompt: list[int], c: Completion
) -> dict[str, Any]:
    """OpenAI's legacy shape: tokens, token_logprobs, top_logprobs (dicts), text_offset."""
    tok = engine.tokenizer
    entries: list[TokenLogprob | None] = []
    ids: list[int] = []
    if job.echo and c.prompt_logprobs is not None:
        entries += c.prompt_logprobs
        ids += prompt
    entries += c.logprobs
    ids += [e.token for e in c.logprobs]
    tops: list[dict[str, float] | None] = []
    for e in entries:
        if e is None:
            tops.append(None)
            continue
        top = {token_text(tok, t): lp for t, lp in e.top}
        top.setdefault(token_text(tok, e.token), e.logprob)
        tops.append(top)
    return {
        "tokens": [token_text(tok, t) for t in ids],
        "token_logprobs": [None if e is None else e.logprob for e in entries],
        "top_logprobs": tops,
        "text_offset": _offsets(tok, ids),
    }


def _offsets(tokenizer: Any, ids: list[int]) -> list[int]:
    """Character offset of each token in the decoded text (a split character counts at its end)."""
    detok = Detokenizer(tokenizer, skip_special=False)
    offsets, length = [], 0
    for t in ids:
        offsets.append(length)
        length += len(detok.add(t))
    return offsets


def models_response(engine: Engine, created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": engine.name, "object": "model", "created": created, "owned_by": "danlu"}],
    }
