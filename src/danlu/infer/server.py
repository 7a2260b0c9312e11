"""`danlu serve`'s HTTP side: an OpenAI-compatible API and the chat page, on FastAPI + uvicorn.

Routing, auth, limits and streaming only; request parsing and response shapes are in
`openai_api`, generation in `Engine`. FastAPI is imported only here (the `serve` extra), so the
rest of danlu never pays for it: nothing outside the serving paths imports this module. Every failure a client can cause becomes a 4xx with OpenAI's
error body; anything else a 500 with the same shape; the server itself keeps running.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from danlu.infer.answer import AnswerStream
from danlu.infer.engine import Completion, Engine
from danlu.infer.grounding import (
    embeddings_response,
    grounded_body,
    parse_embeddings,
    refusal_chunks,
    refusal_response,
)
from danlu.infer.guard import browser_refusal
from danlu.infer.openai_api import ApiError, Job, Limits, parse_chat, parse_completion
from danlu.infer.openai_responses import (
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    models_response,
    usage_chunk,
)
from danlu.infer.requests import Output

log = logging.getLogger("danlu.serve")


@dataclass(frozen=True)
class ServerOptions:
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_concurrent: int = 64
    """Requests in flight (running or queued in the engine); more get 429."""
    limits: Limits = field(default_factory=Limits)
    knowledge: Any = None
    """danlu.infer.grounding.Knowledge: ground chats on an index, serve /v1/embeddings."""


class BodyTooLarge(Exception):
    pass


def create_app(engine: Engine, options: ServerOptions | None = None) -> Any:
    """The ASGI app serving `engine`. The engine stays the caller's to close."""
    options = options or ServerOptions()
    app = FastAPI(title="danlu", docs_url=None, redoc_url=None, openapi_url=None)
    state = _State(engine, options)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        error = ApiError(exc.status_code, str(exc.detail), code=_code(exc.status_code))
        return JSONResponse(error.body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        error = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error")
        return JSONResponse(error.body(), status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(state.page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        running, waiting = engine.scheduler.load
        return {
            "status": "ok",
            "model": engine.name,
            "running": running,
            "waiting": waiting,
            "in_flight": state.in_flight,
            "engine": dict(engine.scheduler.stats),
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return models_response(engine, state.started)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body, passages, refusal = await state.ground(await _json(request))
        job = parse_chat(body, engine, options.limits)
        if passages is not None:
            job.extra["passages"] = passages
        if refusal is not None:
            return _refused(job, refusal)
        return await state.answer(job, request, StreamingResponse)

    if options.knowledge is not None:

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> Any:
            knowledge = options.knowledge
            texts, encoding = parse_embeddings(await _json(request), knowledge)
            vectors, tokens = await asyncio.to_thread(knowledge.embed, texts)
            return embeddings_response(vectors, knowledge.embedding_model, tokens, encoding)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        job = parse_completion(await _json(request), engine, options.limits)
        return await state.answer(job, request, StreamingResponse)

    return _Guard(app, options)


class _State:
    """What the routes share: the engine, the in-flight count, and the chat page."""

    def __init__(self, engine: Engine, options: ServerOptions) -> None:
        self.engine, self.options = engine, options
        self.in_flight = 0
        self.started = int(time.time())
        self.page = resources.files("danlu.infer").joinpath("web/index.html").read_text("utf-8")

    async def ground(self, body: Any) -> tuple[Any, list | None, str | None]:
        """The request grounded on the index (retrieval runs off the event loop)."""
        if self.options.knowledge is None:
            return body, None, None
        return await asyncio.to_thread(grounded_body, body, self.options.knowledge)

    async def answer(self, job: Job, request: Any, streaming: Any) -> Any:
        if self.in_flight >= self.options.max_concurrent:
            raise ApiError(
                429,
                f"too many requests in flight (limit {self.options.max_concurrent}); retry shortly",
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )
        run = _Run(self, job)
        if job.stream:
            return streaming(
                run.sse(request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await run.whole(request)


class _Run:
    """One request's trip through the engine: holds its slot until it ends or the client leaves."""

    def __init__(self, state: _State, job: Job) -> None:
        self.state, self.job, self.engine = state, job, state.engine
        self.events: asyncio.Queue[Output] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.request = self.engine.submit(
            job.prompts,
            job.params,
            lambda out: loop.call_soon_threadsafe(self.events.put_nowait, out),
            n=job.n,
            echo=job.echo,
            extra_eos=job.extra_eos,
        )
        state.in_flight += 1
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.request.cancel()
            self.state.in_flight -= 1

    async def _events(self, http: Any) -> AsyncIterator[Output]:
        """Engine events until every choice ends; a client disconnect cancels the request."""
        watcher = asyncio.ensure_future(_wait_disconnect(http))
        watcher.add_done_callback(lambda _: self.request.cancel())
        try:
            left = self.request.choices
            while left:
                out = await self.events.get()
                if out.finish_reason == "error":
                    raise ApiError(500, out.error or "generation failed", type="server_error")
                if out.finish_reason == "cancelled":
                    return
                left -= out.finish_reason is not None
                yield out
        finally:
            watcher.cancel()
            self.release()

    async def whole(self, http: Any) -> Any:
        done = [Completion(i) for i in range(self.request.choices)]
        async for out in self._events(http):
            done[out.index].add(out)
        if self.request.cancelled.is_set() and any(c.finish_reason is None for c in done):
            return None  # the client has gone; nobody reads a response
        build = chat_response if self.job.kind == "chat" else completion_response
        return build(self.job, self.engine, done)

    async def sse(self, http: Any) -> AsyncIterator[str]:
        job, engine = self.job, self.engine
        completion_tokens, seen = 0, set()
        try:
            streams = [AnswerStream(job.rules) for _ in range(self.request.choices)]
            if job.kind == "chat":
                for i in range(self.request.choices):
                    yield _sse(chat_chunk(job, engine, None, index=i, first=True))
            async for out in self._events(http):
                completion_tokens += len(out.tokens)
                if job.kind == "chat":
                    yield _sse(chat_chunk(job, engine, out, stream=streams[out.index]))
                else:
                    yield _sse(completion_chunk(job, engine, out, first=out.index not in seen))
                    seen.add(out.index)
            if job.include_usage:
                yield _sse(usage_chunk(job, self.request.prompt_tokens, completion_tokens))
            yield "data: [DONE]\n\n"
        except ApiError as exc:  # headers are sent: report in-band, as OpenAI does
            yield _sse(exc.body())
        finally:
            self.release()


def _refused(job: Job, text: str) -> Any:
    if not job.stream:
        return refusal_response(job, text)

    async def events() -> AsyncIterator[str]:
        for chunk in refusal_chunks(job, text):
            yield _sse(chunk)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def _wait_disconnect(http: Any) -> None:
    while True:
        message = await http.receive()
        if message["type"] == "http.disconnect":
            return


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _json(request: Any) -> Any:
    try:
        raw = await request.body()
    except BodyTooLarge:
        raise _too_large(request.app.state.max_body) from None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            400,
            f"We could not parse the JSON body of your request ({exc}). The OpenAI API expects a "
            "JSON payload.",
        ) from None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body larger than {limit} bytes", code="request_too_large")


def _code(status: int) -> str | None:
    return {404: "not_found", 405: "method_not_allowed"}.get(status)


class _Guard:
    """ASGI middleware in front of everything: the body size limit, then the API-key check on
    /v1, or without a key the browser-safety checks (danlu.infer.guard) on every route.

    Plain ASGI rather than Starlette's BaseHTTPMiddleware, which buffers streaming responses
    and hides client disconnects from the route.
    """

    def __init__(self, app: Any, options: ServerOptions) -> None:
        self.app, self.options = app, options
        app.state.max_body = options.max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        error = self._refuse(scope)
        if error is not None:
            return await _send_json(send, error)
        limit, seen = self.options.max_body_bytes, 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)

    def _refuse(self, scope: dict) -> ApiError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.options.max_body_bytes:
            return _too_large(self.options.max_body_bytes)
        key = self.options.api_key
        if not key:
            server_ip = (scope.get("server") or ("", 0))[0]
            return browser_refusal(headers, server_ip, scope["method"])
        if scope["path"].startswith("/v1"):
            auth = headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token:
                return ApiError(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    code="invalid_api_key",
                )
            if not hmac.compare_digest(token.strip().encode(), key.encode()):
                shown = (
                    token[:3] + "*" * max(len(token) - 7, 0) + token[-4:]
                    if len(token) > 8
                    else "***"
                )
                return ApiError(
                    401, f"Incorrect API key provided: {shown}.", code="invalid_api_key"
                )
        return None


async def _send_json(send: Any, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
