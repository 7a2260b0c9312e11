"""What flows between callers and the scheduler: requests, their sequences, and output events."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from danlu.infer.params import GenParams
from danlu.infer.sampling import RowState, TokenLogprob
from danlu.infer.text import Detokenizer, StopChecker


@dataclass
class Output:
    """One event for one choice: new text (whole characters) and the tokens that produced it.

    The last event of a choice has `finish_reason` set: 'stop' (end of text or a stop string),
    'length' (max tokens or context), 'cancelled', or 'error' (with `error`).
    """

    index: int
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None
    """Echo: logprob of every prompt token (first one None); sent with the choice's first event."""
    error: str | None = None


Sink = Callable[[Output], None]


class Request:
    """A submitted request: `len(prompts) * n` choices; choice `i*n + j` is prompt i's j-th."""

    def __init__(
        self,
        prompts: list[list[int]],
        params: GenParams,
        sink: Sink,
        n: int = 1,
        echo: bool = False,
        eos: frozenset[int] = frozenset(),
    ) -> None:
        self.id = uuid.uuid4().hex
        self.prompts, self.params, self.sink, self.n = prompts, params, sink, n
        self.echo = echo
        self.eos = eos
        self.created = time.time()
        self.cancelled = threading.Event()
        self.prompt_tokens = sum(len(p) for p in prompts)

    @property
    def choices(self) -> int:
        return len(self.prompts) * self.n

    def cancel(self) -> None:
        """Stop generating for this request; its rows leave the batch at the next step."""
        self.cancelled.set()


class Sequence:
    """One choice being generated: sampling state, incremental text, stop strings, limits."""

    def __init__(
        self, request: Request, index: int, tokenizer: Any, device: Any, max_new: int
    ) -> None:
        from danlu.infer.sampling import make_generator

        p = request.params
        self.request, self.index = request, index
        self.prompt = request.prompts[index // request.n]
        seed = None if p.seed is None else p.seed + index % request.n
        gen = make_generator(seed, device) if p.sampling else None
        self.row = RowState(params=p, prompt=self.prompt, generator=gen)
        self.detok = Detokenizer(tokenizer, self.prompt, p.skip_special_tokens)
        self.stops = StopChecker(p.stop)
        self.max_new = max_new
        self.pending: list[int] = []
        self.pending_lp: list[TokenLogprob] = []
        self.prompt_lp: list[TokenLogprob | None] | None = None
        self.done = False

    @property
    def echo_k(self) -> int | None:
        """Top-k for prompt logprobs when this choice echoes its prompt with logprobs."""
        p = self.request.params
        return p.logprobs if self.request.echo and p.logprobs is not None else None

    def advance(self, token: int, lp: TokenLogprob | None) -> Output | None:
        """Take the next token; returns an event when there is text to emit or the choice ends."""
        self.row.record(token)
        self.pending.append(token)
        if lp is not None:
            self.pending_lp.append(lp)
        p = self.request.params
        finish = None
        if (token in self.request.eos or token in p.stop_token_ids) and not p.ignore_eos:
            text, finish = self._finish_text(), "stop"
        else:
            text, hit = self.stops.feed(self.detok.add(token))
            if hit:
                finish = "stop"
            elif len(self.row.output) >= self.max_new:
                text, finish = text + self._finish_text(), "length"
        if not text and finish is None:
            return None
        return self.emit(text, finish)

    def _finish_text(self) -> str:
        # A character cut in half by the token limit is not text: drop it rather than emit U+FFFD.
        text, hit = self.stops.feed(self.detok.flush().rstrip("\ufffd"))
        return text if hit else text + self.stops.flush()

    def emit(self, text: str, finish: str | None = None, error: str | None = None) -> Output:
        out = Output(self.index, text, self.pending, self.pending_lp, finish, error=error)
        if self.prompt_lp is not None:
            out.prompt_logprobs, self.prompt_lp = self.prompt_lp, None
        self.pending, self.pending_lp = [], []
        if finish is not None:
            self.done = True
        return out

    def finish_now(self, reason: str, error: str | None = None) -> Output:
        """End this choice outside the token flow (cancelled, context full, engine error)."""
        text = "" if reason in ("cancelled", "error") else self._finish_text()
        return self.emit(text, reason, error)
