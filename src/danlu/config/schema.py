"""Typing machinery behind the flat config: section registry and value coercion.

The YAML is flat (every key unique across concerns, as in LLaMA-Factory) while the code groups
fields into one dataclass per concern. `SECTIONS` maps a concern's name to its dataclass; the
flat key -> section index is derived from it and checked for duplicates at import time.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

from danlu.utils.errors import UsageError

SECTIONS: dict[str, type] = {}


class ConfigError(UsageError):
    """A config file or override is invalid; the message names the file/override and key."""


def section(name: str) -> Callable[[type], type]:
    """Register a dataclass as the config section `name`; its field names must be globally unique."""

    def register(cls: type) -> type:
        cls = dataclasses.dataclass(cls)
        taken = key_index()
        for f in dataclasses.fields(cls):
            if f.name in taken:
                raise TypeError(f"config key {f.name!r} defined twice: {taken[f.name]} and {name}")
        SECTIONS[name] = cls
        return cls

    return register


def key_index() -> dict[str, str]:
    """Flat key -> name of the section that owns it."""
    return {f.name: name for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def type_name(tp: Any) -> str:
    """Human name of a field type for messages and docs."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return tp.__name__
    return {int: "integer", float: "number", bool: "boolean", str: "string"}.get(tp, str(tp))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Return `value` converted to `tp`, or raise ValueError('KEY must be TYPE, got VALUE')."""
    try:
        return _coerce(key, value, tp)
    except _Mismatch:
        raise ValueError(f"{key} must be {_article(type_name(tp))}, got {value!r}") from None


class _Mismatch(Exception):
    pass


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(key, value, args)
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise _Mismatch
    if origin is list:
        return _coerce_list(key, value, args[0])
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return {str(k): v for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key)
    return _coerce_scalar(value, tp)


def _coerce_union(key: str, value: Any, args: tuple) -> Any:
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(key, value, arg)
        except _Mismatch:
            continue
    raise _Mismatch


def _coerce_list(key: str, value: Any, item_tp: Any) -> list:
    if isinstance(value, str) and item_tp is str:
        # `lora_target=q_proj,v_proj` on the command line
        return [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        value = [value]  # `data: file.jsonl` is shorthand for a one-element list
    return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]


def _coerce_scalar(value: Any, tp: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        return _to_float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(value, tp):
        return value
    raise _Mismatch


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):  # PyYAML reads `1e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise _Mismatch from None
    raise _Mismatch


def build_dataclass(cls: type, value: Any, where: str) -> Any:
    """Build a nested dataclass (e.g. one data source) from a mapping, checking its keys."""
    if isinstance(value, str) and "path" in {f.name for f in dataclasses.fields(cls)}:
        value = {"path": value}
    if not isinstance(value, dict):
        raise _Mismatch
    hints = field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in value.items():
        if k not in hints:
            raise ValueError(unknown_key_message(f"{where}.{k}", str(k), names, prefix=f"{where}."))
        kwargs[k] = coerce(f"{where}.{k}", v, hints[k])
    missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in kwargs]
    if missing:
        raise ValueError(f"{where} needs key '{missing[0]}'")
    return cls(**kwargs)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def unknown_key_message(shown: str, key: str, valid: list[str], prefix: str = "") -> str:
    import difflib

    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return f"unknown key '{shown}'{hint}"


def _article(name: str) -> str:
    if " | " in name:
        return f"one of {name}"
    return ("an " if name[0] in "aeiou" else "a ") + name
