"""Attribute docstrings of dataclass fields.

Config fields are documented the way PEP 257 suggests for attributes: a string literal right
below the field. Python drops those at run time, so we read them back from the source with
`ast`. They feed `--help`, `danlu config keys` and docs/config.md, so the documentation cannot
drift from the code.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each annotated attribute of `cls` (and its bases) to its docstring ('' if none)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        docs.update(_docs_in_class_body(ast.parse(source).body[0]))
    return docs


def _docs_in_class_body(node: ast.AST) -> dict[str, str]:
    docs: dict[str, str] = {}
    body = getattr(node, "body", [])
    for stmt, nxt in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        is_doc = isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
        text = nxt.value.value if is_doc else None
        docs[stmt.target.id] = inspect.cleandoc(text) if isinstance(text, str) else ""
    return docs
