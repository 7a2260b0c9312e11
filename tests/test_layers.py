"""Layers import downward only (cli > board > infer, eval, rag, train > methods, models, data,
plan > config > utils): a module never imports from a layer above its own, at the top of the
file or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "danlu"
LAYERS = [
    {"utils"},
    {"config"},
    {"methods", "models", "data", "plan"},
    {"infer", "eval", "rag", "train"},
    {"board"},
    {"cli"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "danlu" and len(parts) > 1 and parts[1] in LEVEL:
                found.add(parts[1])
    return found


def test_no_module_imports_upward():
    upward = []
    for package, level in LEVEL.items():
        for path in sorted((SRC / package).rglob("*.py")):
            for target in _imports(path):
                if LEVEL[target] > level:
                    upward.append(f"{path.relative_to(SRC)} imports danlu.{target}")
    assert not upward, "\n".join(upward)
