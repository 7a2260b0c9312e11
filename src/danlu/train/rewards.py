"""The reward functions of stage grpo (DESIGN §9): built-ins, a user's Python function, or a
trained reward model, each called as `f(prompts, completions, **columns) -> list[float]`.

- `prompts`: the record's prompt, one per completion: the string of a plain `{"prompt": ...}`
  record, else its turns as `[{"role", "content"}, ...]`;
- `completions`: the generated answers as text (special tokens removed);
- `columns`: every other column of the records (e.g. `solution`), one value per completion,
  plus `completion_ids` (token ids) and `completion_lengths`.
A function may return None for a completion it does not judge (left out of the sum, as TRL).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError

RewardFn = Callable[..., list]


# --- built-ins -----------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (braces balanced), else None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a completion or solution: after </think> when there is one; the
    last \\boxed{}; after a GSM8K '####'; else the last number; else the stripped text."""
    text = text.split("</think>")[-1]
    boxed = _boxed(text)
    if boxed is not None:
        return boxed.strip()
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else (text.strip() or None)


def _as_number(text: str) -> float | None:
    cleaned = text.strip().strip("$").rstrip(".").replace(",", "").replace(" ", "")
    try:
        return float(Fraction(cleaned))
    except (ValueError, ZeroDivisionError):
        return None


def same_answer(a: str | None, b: str | None) -> bool:
    """Numbers compare by value (1,000 = 1000.0 = 2000/2), anything else as stripped text."""
    if a is None or b is None:
        return False
    x, y = _as_number(a), _as_number(b)
    if x is not None and y is not None:
        return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
    return a.strip().lower() == b.strip().lower()


def accuracy(prompts: list, completions: list[str], solution: list | None = None, **_: Any) -> list:
    """1.0 where the completion's final answer equals the `solution` column's, else 0.0."""
    if solution is None:
        raise UsageError(
            "reward_funcs: accuracy compares answers with a 'solution' column, and the data has "
            "none (columns: {solution: YOUR_COLUMN} renames yours)"
        )
    return [
        float(same_answer(extract_answer(c), extract_answer(str(s))) if s is not None else 0.0)
        for c, s in zip(completions, solution, strict=True)
    ]


_THINK = re.compile(r"\s*(?:<think>)?(?P<thought>.+?)</think>\s*(?P<answer>\S.*)", re.DOTALL)


def think_format(prompts: list, completions: list[str], **_: Any) -> list:
    """1.0 for `<think>reasoning</think> answer` (the opening tag may be the template's, in the
    prompt), else 0.0."""
    out = []
    for c in completions:
        m = _THINK.fullmatch(c)
        out.append(float(bool(m) and "<think>" not in m["answer"] and c.count("</think>") == 1))
    return out


def length(
    prompts: list, completions: list[str], completion_lengths: list[int], max_length: int, **_: Any
) -> list:
    """Shorter is better: -tokens / max_completion_length, in [-1, 0]; give it a small weight."""
    return [-n / max_length for n in completion_lengths]


BUILTIN = {"accuracy": accuracy, "format": think_format, "length": length}


# --- loading -------------------------------------------------------------------------------------


@dataclass
class Reward:
    name: str
    """As configured: `accuracy`, `python:FILE.py:FUNCTION`, `rm:PATH`..."""
    fn: RewardFn
    where: str = ""
    """The function's `file:line` (for a user function), named in its errors."""

    def __call__(self, prompts: list, completions: list[str], **columns: Any) -> list[float]:
        values = list(self.fn(prompts, completions, **columns))
        if len(values) != len(completions):
            at = f" ({self.where})" if self.where else ""
            raise UsageError(
                f"reward_funcs: {self.name}{at} returned {len(values)} rewards for "
                f"{len(completions)} completions; it must return one per completion"
            )
        return [math.nan if v is None else float(v) for v in values]


def load_rewards(specs: list[str], max_length: int, model_loader: Callable | None = None) -> list:
    """The configured reward functions; a bad one is a one-line UsageError before training.
    `model_loader(path)` builds an `rm:PATH` scorer (the engine passes one; checks pass None)."""
    out = []
    for spec in specs:
        if spec in BUILTIN:
            fn = BUILTIN[spec]
            out.append(
                Reward(
                    spec, functools.partial(fn, max_length=max_length) if spec == "length" else fn
                )
            )
        elif spec.startswith("python:"):
            fn = import_function(spec[len("python:") :])
            out.append(Reward(spec, fn, _where(fn)))
        elif spec.startswith("rm:"):
            out.append(Reward(spec, model_loader(spec[3:]) if model_loader else _unloaded))
        else:
            raise UsageError(
                f"reward_funcs: '{spec}' is not a reward function: use {', '.join(BUILTIN)}, "
                "python:FILE.py:FUNCTION, python:MODULE:FUNCTION or rm:PATH"
            )
    return out


def _unloaded(*_: Any, **__: Any) -> list:
    raise RuntimeError("an rm: reward scored before its model was loaded")


def _where(fn: Any) -> str:
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError):
        return ""


def import_function(target: str) -> RewardFn:
    """`FILE.py:FUNCTION` or `package.module:FUNCTION` -> the function."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise UsageError(
            f"reward_funcs: 'python:{target}' must be python:FILE.py:FUNCTION or "
            "python:MODULE:FUNCTION"
        )
    module = _import_file(where) if where.endswith(".py") else _import_module(where)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UsageError(f"reward_funcs: {where} has no function '{name}'")
    return fn


def _import_file(path: str) -> Any:
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"reward_funcs: {path}: no such file")
    spec = importlib.util.spec_from_file_location(f"danlu_reward_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        raise UsageError(f"reward_funcs: {path}: cannot import it: {_reason(exc)}") from exc
    return module


def _import_module(name: str) -> Any:
    try:
        return sys.modules.get(name) or importlib.import_module(name)
    except Exception as exc:
        raise UsageError(f"reward_funcs: module {name}: cannot import it: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError at line {exc.lineno}: {exc.msg}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
