"""Generate docs/config.md from the section dataclasses (`python -m danlu.config.reference`).

A test compares the committed file with this output, so the reference cannot drift.
"""

from __future__ import annotations

import dataclasses

from danlu.config.schema import SECTIONS, field_types, type_name
from danlu.config.sections import DataSource
from danlu.utils.docstrings import field_docs


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return "null" if value is None else f"`{value}`"


def _table(cls: type) -> list[str]:
    docs, types = field_docs(cls), field_types(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        doc = " ".join(docs.get(f.name, "").split()).replace("|", "\\|")
        kind = type_name(types[f.name]).replace("|", "\\|")
        rows.append(f"| `{f.name}` | {kind} | {_default(f)} | {doc} |")
    return rows


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/danlu/config/sections.py` by `make docs`; do not edit by hand.",
        "Every key is flat and unique (DESIGN §2); pass any of them as `key=value` on the command",
        "line after the config file. Ranges and cross-key rules are in `src/danlu/config/rules.py`.",
        "",
    ]
    for name, cls in SECTIONS.items():
        lines += [f"## {name}", "", *_table(cls), ""]
    lines += ["## data entries (each item of `data:`)", "", *_table(DataSource), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
