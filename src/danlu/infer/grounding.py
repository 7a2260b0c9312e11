"""What `danlu serve --rag-index` adds to the server: chat answers grounded on retrieved
passages, and `POST /v1/embeddings` in OpenAI's shape.

The server knows nothing of indexes: the CLI hands it a `Knowledge` (two functions built from
danlu.rag), so infer does not import rag. A chat request's last user turn is the question: it
is replaced by the knowledge-base prompt over the retrieved passages, and the response carries
them in an extra top-level field, `passages` (in the first chunk when streaming), each
`{source, text, score, headings}`. When no passage reaches `score_threshold` the answer is the
refusal text, without calling the model.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from danlu.infer.openai_api import ApiError

MAX_INPUTS = 2048
"""Texts in one /v1/embeddings request (OpenAI's limit)."""


@dataclass(frozen=True)
class Knowledge:
    ground: Callable[[str], tuple[str, list[dict], str | None]] | None
    """question -> (the grounded prompt, the passages as JSON, the refusal or None)."""
    embed: Callable[[list[str]], tuple[list[list[float]], int]]
    """texts -> (one vector each, the tokens they took)."""
    embedding_model: str


def grounded_body(body: Any, knowledge: Knowledge) -> tuple[Any, list[dict] | None, str | None]:
    """(the request with its last user turn grounded, the passages, the refusal). A body that is
    not a chat request ending with a user's text is returned as it is (parse_chat says why)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if knowledge.ground is None or not isinstance(messages, list) or not messages:
        return body, None, None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return body, None, None
    if not isinstance(last.get("content"), str) or not last["content"].strip():
        return body, None, None
    prompt, passages, refusal = knowledge.ground(last["content"])
    grounded = {
        **body,
        "messages": [*messages[:-1], {**last, "content": prompt or last["content"]}],
    }
    return grounded, passages, refusal


def parse_embeddings(body: Any, knowledge: Knowledge) -> tuple[list[str], str]:
    """(the texts, "float" | "base64") of an embeddings request; ApiError 400 otherwise."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", param=None)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", param="model")
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "'input' must be a string or a non-empty list of strings (token-id "
                       "input is not supported: send text)", param="input")  # fmt: skip
    if len(texts) > MAX_INPUTS:
        raise ApiError(400, f"'input' has {len(texts)} texts; at most {MAX_INPUTS}", param="input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(
            400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
        )
    return texts, encoding


def embeddings_response(vectors: list[list[float]], model: str, tokens: int, encoding: str) -> dict:
    def encoded(v: list[float]) -> Any:
        return (
            base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if encoding == "base64" else v
        )

    data = [
        {"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)
    ]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip


def refusal_response(job: Any, text: str) -> dict:
    """A whole chat.completion saying `text` (no passage was close enough to answer from)."""
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
              "finish_reason": "stop"}  # fmt: skip
    prompt = sum(len(p) for p in job.prompts)
    return {"id": job.response_id, "object": "chat.completion", "created": job.created,
            "model": job.model, "choices": [choice], **job.extra,
            "usage": {"prompt_tokens": prompt, "completion_tokens": 0, "total_tokens": prompt}}  # fmt: skip


def refusal_chunks(job: Any, text: str) -> list[dict]:
    """The same, as the chunks of a stream: role (with the passages), the text, the end."""

    def chunk(delta: dict, finish: str | None, extra: dict | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"id": job.response_id, "object": "chat.completion.chunk", "created": job.created,
                "model": job.model, "choices": [choice], **(extra or {})}  # fmt: skip

    return [chunk({"role": "assistant", "content": ""}, None, job.extra),
            chunk({"content": text}, None), chunk({}, "stop")]  # fmt: skip
