"""A Go text/template interpreter for the constructs Ollama Modelfiles use (and danlu's
generated TEMPLATE emits): range over .Messages with $i, if / else if / end, eq, ne, not, and,
len, slice, $-variables and field access. Independent of danlu's generator: it reads the text."""

from __future__ import annotations

import re
import shlex
from typing import Any

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)


def render(template: str, data: dict[str, Any]) -> str:
    tokens = _tokens(template)
    tree, rest = _parse(tokens, 0)
    assert rest == len(tokens), "unbalanced {{ end }}"
    out: list[str] = []
    _run(tree, {"$": data, ".": data}, out)
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    for m in _ACTION.finditer(text):
        if m.start() > pos:
            out.append(("text", text[pos : m.start()]))
        out.append(("action", m.group(1)))
        pos = m.end()
    if pos < len(text):
        out.append(("text", text[pos:]))
    return out


def _parse(tokens, i):
    """Nodes until an `end`/`else` at this level; returns (nodes, index of that token)."""
    nodes = []
    while i < len(tokens):
        kind, body = tokens[i]
        if kind == "text":
            nodes.append(("text", body))
        elif body == "end" or body.startswith("else"):
            return nodes, i
        elif body.startswith("if "):
            branches, i = [], i
            cond = body[3:]
            while True:
                inner, i = _parse(tokens, i + 1)
                branches.append((cond, inner))
                head = tokens[i][1]
                if head == "end":
                    break
                cond = head[len("else if ") :] if head.startswith("else if ") else "true"
            nodes.append(("if", branches))
        elif body.startswith("range "):
            inner, i = _parse(tokens, i + 1)
            assert tokens[i][1] == "end"
            nodes.append(("range", body[6:], inner))
        else:
            nodes.append(("action", body))
        i += 1
    return nodes, i


def _run(nodes, scope, out):
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "if":
            for cond, body in node[1]:
                if cond == "true" or _truthy(_eval(cond, scope)):
                    _run(body, scope, out)
                    break
        elif node[0] == "range":
            m = re.fullmatch(r"\$(\w+), \$(\w+) := (\S+)", node[1])
            for i, item in enumerate(_eval(m.group(3), scope)):
                _run(
                    node[2], {**scope, "$" + m.group(1): i, "$" + m.group(2): item, ".": item}, out
                )
        else:
            m = re.fullmatch(r"(\$\w+) := (.*)", node[1])
            if m:
                scope[m.group(1)] = _eval(m.group(2), scope)
            else:
                out.append(str(_eval(node[1], scope)))


def _truthy(v):
    return bool(v)


def _eval(expr: str, scope):
    return _call(_split(expr), scope)


def _split(expr: str) -> list:
    """Words, with parenthesised sub-expressions as nested lists."""
    lex = shlex.shlex(expr.replace("(", " ( ").replace(")", " ) "), posix=False)
    lex.wordchars += "$.:=_"
    stack: list[list] = [[]]
    for word in lex:
        if word == "(":
            stack.append([])
        elif word == ")":
            inner = stack.pop()
            stack[-1].append(inner)
        else:
            stack[-1].append(word)
    return stack[0]


def _value(word, scope):
    if isinstance(word, list):
        return _call(word, scope)
    if word.startswith('"'):
        return word[1:-1]
    if word.isdigit():
        return int(word)
    if word.startswith("$."):
        return scope["$"][word[2:]]
    if word.startswith("$"):
        return scope[word]
    if word.startswith("."):
        return scope["."][word[1:]]
    raise ValueError(word)


FUNCS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "not": lambda a: not a,
    "and": lambda *a: all(a),
    "len": len,
    "slice": lambda x, i: x[i:],
}


def _call(words, scope):
    if isinstance(words[0], str) and words[0] in FUNCS:
        return FUNCS[words[0]](*(_value(w, scope) for w in words[1:]))
    assert len(words) == 1, words
    return _value(words[0], scope)
