"""Load a flat YAML config plus `key=value` overrides into typed sections, validated.

Everything is checked here, before any model or data is touched: unknown keys (with the closest
valid key), types, and the rule table. Errors are one line naming the file or override.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from danlu.config import rules
from danlu.config.schema import (
    SECTIONS,
    ConfigError,
    coerce,
    field_types,
    key_index,
    unknown_key_message,
)


class Config:
    """A resolved run config: typed sections, readable flat (`cfg.lora_rank`) or by section."""

    def __init__(self, sections: dict[str, Any], source: str | None = None) -> None:
        self._sections = sections
        self._index = key_index()
        self.source = source

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return getattr(self._sections[self._index[key]], key)
        except KeyError:
            raise AttributeError(f"no config key {key!r}") from None

    def section(self, name: str) -> Any:
        """The typed dataclass of one concern, e.g. `cfg.section('lora')` -> LoraArgs."""
        return self._sections[name]

    def to_dict(self) -> dict[str, Any]:
        """Flat key -> plain value (data sources as mappings), in section order."""
        flat: dict[str, Any] = {}
        for obj in self._sections.values():
            for f in dataclasses.fields(obj):
                flat[f.name] = _plain(getattr(obj, f.name))
        return flat

    def replace(self, **changes: Any) -> Config:
        """A copy with some keys changed (validated like an override)."""
        raw = {**self.to_dict(), **changes}
        return build_config(raw, {k: "replace()" for k in raw}, self.source)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read `path` (optional) and apply `key=value` overrides; raise ConfigError on bad input."""
    raw: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if path is not None:
        raw = read_yaml(Path(path))
        origin = dict.fromkeys(raw, str(path))
    for item in overrides:
        key, value = parse_override(item)
        raw[key] = value
        origin[key] = f"override '{item}'"
    return build_config(raw, origin, str(path) if path else None)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise ConfigError(
            f"{path}:{e.second}: key '{e.key}' is set twice (lines {e.first} and {e.second}); "
            "keep one"
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {e.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error: plain YAML keeps
    the last value and drops the first without a word."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                continue
            if first != line:
                raise _DuplicateKey(key, first, line)
        return super().construct_mapping(node, deep)


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key:
        raise ConfigError(f"override '{item}': expected key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # a plain string that happens to look like broken YAML
    return key, value


def build_config(raw: dict[str, Any], origin: dict[str, str], source: str | None) -> Config:
    index = key_index()
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in raw.items():
        where = origin.get(key, "config")
        if key not in index:
            raise ConfigError(f"{where}: " + unknown_key_message(str(key), str(key), list(index)))
        section = index[key]
        try:
            values[section][key] = coerce(key, value, field_types(SECTIONS[section])[key])
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    cfg = Config(sections, source)
    _check_rules(cfg, origin)
    return cfg


def _check_rules(cfg: Config, origin: dict[str, str]) -> None:
    flat = {k: getattr(cfg, k) for k in key_index()}
    broken = rules.violations(flat)
    if broken:
        rule, message = broken[0]
        where = next((origin[k] for k in rule.keys if k in origin), "config")
        raise ConfigError(f"{where}: {message}")


def dump_config(cfg: Config) -> str:
    """The resolved config as flat YAML, one commented block per section; reloads to equal."""
    out = []
    flat = cfg.to_dict()
    for name, cls in SECTIONS.items():
        block = {f.name: flat[f.name] for f in dataclasses.fields(cls)}
        out.append(f"# --- {name} ---\n")
        out.append(yaml.safe_dump(block, sort_keys=False, allow_unicode=True))
    return "".join(out)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config (atomically) to `path`, e.g. OUTPUT_DIR/config.yaml."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dump_config(cfg), encoding="utf-8")
    tmp.replace(path)
    return path
