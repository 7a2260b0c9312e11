"""The OpenAI wire format, without any web framework: request bodies -> validated jobs.

Kept apart from `server.py` so that every shape (and every 4xx message) is a pure function that
tests can call directly, and so that the server module is only routing and streaming
(response bodies are in `openai_responses`). Field
names, defaults and error bodies follow OpenAI's API; vLLM's extensions (top_k, min_p,
repetition_penalty, ignore_eos, stop_token_ids, skip_special_tokens) are accepted too, plus
num_beams and do_sample. Unknown fields are ignored, as vLLM does, so clients that send vendor
extras keep working.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from danlu.infer.answer import AnswerRules
from danlu.infer.engine import Engine, PromptTooLong
from danlu.infer.params import MAX_TOP_LOGPROBS, GenParams, ParamError

ROLES = {"system", "developer", "user", "assistant", "tool"}


class ApiError(Exception):
    """An error response: HTTP status + OpenAI's `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type,
            param,
            code,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class Limits:
    max_tokens: int = 4096
    """Largest max_tokens a request may ask for (and the chat default's cap)."""
    max_n: int = 16
    max_prompts: int = 64
    """Prompts in one /v1/completions request (lm-eval batches several)."""


@dataclass
class Job:
    """A parsed, validated request, ready for `Engine.submit`."""

    kind: str  # "chat" | "completion"
    model: str
    prompts: list[list[int]]
    params: GenParams
    n: int = 1
    stream: bool = False
    echo: bool = False
    include_usage: bool = False
    chat_logprobs: bool = False
    extra_eos: frozenset[int] = frozenset()
    extra: dict[str, Any] = field(default_factory=dict)
    """Top-level fields added to the response (the first chunk when streaming): `passages`."""
    rules: AnswerRules = field(default_factory=AnswerRules)
    """How chat answers are read: reasoning_content, tool_calls."""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.kind == "chat" else "cmpl-") + self.id


# -- parsing -----------------------------------------------------------------------------------


def parse_chat(body: dict[str, Any], engine: Engine, limits: Limits) -> Job:
    from danlu.infer.tools_api import request_tools

    _check_model(body, engine)
    tools, forced = request_tools(body)
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise ApiError(
            400, 'response_format: only {"type": "text"} is supported', param="response_format"
        )
    messages = _messages(body.get("messages"))
    try:
        text = engine.chat_text(messages, tools)
    except Exception as exc:  # template errors (e.g. roles it refuses) are the client's input
        raise ApiError(
            400, f"messages cannot be rendered with the chat template: {exc}", param="messages"
        ) from exc
    opening = _forced_lead(engine, tools, forced)
    text += opening
    prompt = engine.tokenizer.encode(text, add_special_tokens=False)
    top = _opt_int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    want = _opt_bool(body, "logprobs") or False
    if top is not None and not want:
        raise ApiError(400, "top_logprobs requires logprobs to be true", param="top_logprobs")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    default = min(limits.max_tokens, max(engine.room(prompt), 1))
    params = _params(body, limits, max_tokens, default, (top or 0) if want else None)
    job = _job("chat", body, engine, limits, [prompt], params)
    job.chat_logprobs = want
    job.extra_eos = engine.chat_eos
    job.rules = answer_rules(engine, text, tools, opening)
    return job


def _forced_lead(engine: Engine, tools: list | None, forced: str | bool) -> str:
    """A forced call (tool_choice `required` or a named function) is the opening of a call in
    the template's own form, put after the generation prompt: the model can only continue a
    call (a light form of constrained decoding: the name and the syntax are fixed, the
    arguments are the model's)."""
    from danlu.infer.tool_calls import family_of, lead
    from danlu.infer.tools_api import names

    if not forced or not tools:
        return ""
    family = family_of(engine.chat_template or "")
    opening = lead(family, forced if isinstance(forced, str) else None, sorted(names(tools)))
    if opening is None:
        raise ApiError(
            400,
            f'tool_choice "required": the {family} call format begins with the function\'s '
            "name; with several tools, name the one to call",
            param="tool_choice",
        )
    return opening


def answer_rules(
    engine: Engine, prompt_text: str, tools: list | None, lead: str = ""
) -> AnswerRules:
    """How this request's answers are read: reasoning when the template or the vocabulary
    knows `<think>` (Qwen3, DeepSeek-R1, QwQ; a model fine-tuned on reasoning data) or the
    prompt opened it; tool calls in the template's family when tools were given."""
    from danlu.infer.reasoning import OPEN, opens_thinking
    from danlu.infer.tool_calls import family_of
    from danlu.infer.tools_api import names

    template = engine.chat_template or ""
    opened = not lead and opens_thinking(prompt_text)
    knows = OPEN in template or OPEN in engine.tokenizer.get_added_vocab()
    return AnswerRules(
        reasoning=not lead and (opened or knows),  # a forced call starts the answer
        opened=opened,
        tool_family=family_of(template) if tools else None,
        tool_names=names(tools),
        lead=lead,
    )


def parse_completion(body: dict[str, Any], engine: Engine, limits: Limits) -> Job:
    _check_model(body, engine)
    if body.get("suffix") not in (None, ""):
        raise ApiError(400, "suffix is not supported by this model", param="suffix")
    prompts = _prompts(body.get("prompt"), engine, limits)
    echo = _opt_bool(body, "echo") or False
    logprobs = _opt_int(body, "logprobs", 0, MAX_TOP_LOGPROBS)
    max_tokens = body.get("max_tokens")
    if max_tokens == 0 and not echo:
        raise ApiError(
            400, "max_tokens must be at least 1 (0 is allowed only with echo)", param="max_tokens"
        )
    params = _params(body, limits, max_tokens, 16, logprobs, allow_zero=echo)
    best_of = body.get("best_of")
    if best_of is not None and best_of != body.get("n", 1):
        raise ApiError(400, "best_of is not supported (only best_of == n)", param="best_of")
    job = _job("completion", body, engine, limits, prompts, params)
    job.echo = echo
    return job


def _job(
    kind: str,
    body: dict,
    engine: Engine,
    limits: Limits,
    prompts: list[list[int]],
    params: GenParams,
) -> Job:
    n = _opt_int(body, "n", 1, limits.max_n) or 1
    if n > 1 and params.num_beams > 1:
        raise ApiError(400, "n > 1 is not supported with num_beams > 1", param="n")
    stream = _opt_bool(body, "stream") or False
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", param="stream_options")
    try:
        engine.check(prompts, params)
    except PromptTooLong as exc:
        raise ApiError(400, str(exc), param=exc.param, code="context_length_exceeded") from exc
    except ParamError as exc:
        raise ApiError(400, str(exc), param=exc.param) from exc
    include = bool(options and options.get("include_usage")) and stream
    return Job(kind, engine.name, prompts, params, n=n, stream=stream, include_usage=include)


def _check_model(body: Any, engine: Engine) -> None:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise ApiError(400, "you must provide a model parameter", param="model")
    if model != engine.name:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty array", param="messages")
    out = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise ApiError(400, f"{where} must be an object", param=where)
        role = msg.get("role")
        if role not in ROLES:
            raise ApiError(
                400,
                f"{where}.role must be one of {sorted(ROLES)}, got {role!r}",
                param=f"{where}.role",
            )
        out.append(_message(msg, role, where))
    return out


def _message(msg: dict[str, Any], role: str, where: str) -> dict[str, Any]:
    """One message as chat templates take it: assistant tool calls (arguments decoded) and a
    tool result's call id and name kept."""
    from danlu.infer.tools_api import calls_of

    out: dict[str, Any] = {
        "role": "system" if role == "developer" else role,
        "content": _content(msg.get("content"), where),
    }
    calls = calls_of(msg, where) if role == "assistant" else None
    if calls:
        out["tool_calls"] = calls
    if role == "tool":
        out.update({k: msg[k] for k in ("tool_call_id", "name") if isinstance(msg.get(k), str)})
    return out


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in content):
            raise ApiError(
                400, f"{where}.content: only text parts are supported", param=f"{where}.content"
            )
        return "".join(p["text"] for p in content)
    raise ApiError(
        400, f"{where}.content must be a string or an array of text parts", param=f"{where}.content"
    )


def _prompts(raw: Any, engine: Engine, limits: Limits) -> list[list[int]]:
    """A string, a list of strings, a list of token ids, or a list of lists of token ids."""
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(_is_int(t) for t in raw):
        items = [raw]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        raise ApiError(
            400,
            "prompt must be a string, an array of strings, an array of token ids or an array of token-id arrays",
            param="prompt",
        )
    if len(items) > limits.max_prompts:
        raise ApiError(
            400,
            f"at most {limits.max_prompts} prompts per request, got {len(items)}",
            param="prompt",
        )
    prompts = []
    for item in items:
        if isinstance(item, str):
            prompts.append(engine.encode(item))
        elif isinstance(item, list) and item and all(_is_int(t) for t in item):
            prompts.append([int(t) for t in item])
        else:
            raise ApiError(
                400,
                "prompt must be a string, an array of strings, an array of token ids or an array of token-id arrays",
                param="prompt",
            )
    return prompts


def _params(
    body: dict,
    limits: Limits,
    max_tokens: Any,
    default: int,
    logprobs: int | None,
    allow_zero: bool = False,
) -> GenParams:
    if max_tokens is None:
        max_tokens = default
    elif not _is_int(max_tokens) or max_tokens < (0 if allow_zero else 1):
        raise ApiError(
            400, f"max_tokens must be a positive integer, got {max_tokens!r}", param="max_tokens"
        )
    elif max_tokens > limits.max_tokens:
        raise ApiError(
            400,
            f"max_tokens must be at most {limits.max_tokens}, got {max_tokens}",
            param="max_tokens",
        )
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
    ):
        raise ApiError(400, "stop must be a string or an array of strings", param="stop")
    values: dict[str, Any] = {
        "max_new_tokens": max_tokens,
        "logprobs": logprobs,
        "stop": tuple(stop or ()),
    }
    for name in (
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "num_beams",
        "do_sample",
        "ignore_eos",
        "skip_special_tokens",
    ):
        if body.get(name) is not None:
            values[name] = body[name]
    ids = body.get("stop_token_ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(_is_int(t) for t in ids):
            raise ApiError(
                400, "stop_token_ids must be an array of integers", param="stop_token_ids"
            )
        values["stop_token_ids"] = tuple(ids)
    for name in ("do_sample", "ignore_eos", "skip_special_tokens"):
        if name in values and not isinstance(values[name], bool):
            raise ApiError(400, f"{name} must be a boolean", param=name)
    if body.get("logit_bias"):
        raise ApiError(400, "logit_bias is not supported", param="logit_bias")
    try:
        return GenParams(**values)
    except ParamError as exc:
        raise ApiError(400, str(exc), param=exc.param) from exc


def _opt_int(body: dict, name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or not low <= value <= high:
        raise ApiError(
            400, f"{name} must be an integer between {low} and {high}, got {value!r}", param=name
        )
    return int(value)


def _opt_bool(body: dict, name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"{name} must be a boolean, got {value!r}", param=name)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
