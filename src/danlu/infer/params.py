"""Generation parameters: one validated dataclass shared by the engine, the CLI and the server.

Validation lives here (not in the server) so that `danlu chat` flags, the HTTP API and library
callers reject the same values with the same one-line message, naming the parameter at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

MAX_STOP = 4
"""OpenAI allows up to 4 stop sequences; more is a 400 there, so it is here too."""
MAX_TOP_LOGPROBS = 20


class ParamError(ValueError):
    """A generation parameter out of range; `param` names it (the API's error `param` field)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class GenParams:
    """How to continue one prompt. Defaults follow the OpenAI API (temperature 1, top_p 1)."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    """0 means greedy decoding (as in the OpenAI API); otherwise sampling at this temperature."""
    top_p: float = 1.0
    top_k: int = 0
    """0 (or -1) disables top-k filtering."""
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    """HF/CTRL-style: logits of tokens already seen (prompt + output) are divided by it."""
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    do_sample: bool | None = None
    """None: sample iff temperature > 0. False forces greedy whatever the temperature."""
    seed: int | None = None
    """Seeds this request's own generator: the same seed gives the same text whatever else is
    batched alongside (each row samples from its own torch.Generator)."""
    num_beams: int = 1
    stop: tuple[str, ...] = ()
    """Strings that end the output; the matched stop string is not part of the output."""
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None
    """None: no logprobs. k >= 0: the chosen token's logprob plus the k most likely tokens."""
    skip_special_tokens: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        _check_int("max_new_tokens", self.max_new_tokens, 0)
        _check_float("temperature", self.temperature, 0.0, 2.0)
        _check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _check_int("top_k", self.top_k, -1)
        _check_float("min_p", self.min_p, 0.0, 1.0)
        _check_float("repetition_penalty", self.repetition_penalty, 0.0, 10.0, low_open=True)
        _check_float("presence_penalty", self.presence_penalty, -2.0, 2.0)
        _check_float("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        _check_int("num_beams", self.num_beams, 1, 16)
        if self.seed is not None:
            _check_int("seed", self.seed, -(2**63), 2**63 - 1)
        if self.logprobs is not None:
            _check_int("logprobs", self.logprobs, 0, MAX_TOP_LOGPROBS)
        if len(self.stop) > MAX_STOP:
            raise ParamError("stop", f"stop: at most {MAX_STOP} sequences, got {len(self.stop)}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ParamError("stop", "stop: every stop sequence must be a non-empty string")
        if self.num_beams > 1 and self.sampling:
            raise ParamError("num_beams", "num_beams > 1 is beam search: set temperature 0")
        if self.num_beams > 1 and self.logprobs is not None:
            raise ParamError("logprobs", "logprobs are not available with num_beams > 1")

    @property
    def sampling(self) -> bool:
        if self.do_sample is not None:
            return self.do_sample and self.temperature > 0
        return self.temperature > 0

    @property
    def penalised(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )

    def with_(self, **changes: Any) -> GenParams:
        return replace(self, **changes)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(name, f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        where = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ParamError(name, f"{name} must be {where}, got {value}")


def _check_float(name: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ParamError(name, f"{name} must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise ParamError(name, f"{name} must be in {bracket}{low:g}, {high:g}], got {value:g}")
