"""`eval_models` -> the models to evaluate, each with a unique report name and folder."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from danlu.models.check import is_adapter_dir
from danlu.utils.errors import UsageError


@dataclass
class EvalTarget:
    name: str
    """Label in the report."""
    slug: str
    """Folder name under eval_output_dir for its predictions."""
    model_args: Any
    """The ModelArgs `load_model` gets (the config's, with model/adapter replaced)."""


def resolve_targets(cfg: Any) -> list[EvalTarget]:
    """One target per `eval_models` entry, or `model` (+ `adapter`) when it is empty.

    A bare adapter folder means that adapter on top of `model:`.
    """
    base_args = cfg.section("model")
    entries = cfg.eval_models or [_entry(cfg.model, cfg.adapter)]
    targets: list[EvalTarget] = []
    for entry in entries:
        model, adapter = entry.path, entry.adapter
        if adapter is None and is_adapter_dir(model):
            model, adapter = cfg.model, entry.path
        name = entry.name or (f"{entry.path}+{entry.adapter}" if entry.adapter else entry.path)
        if name in {t.name for t in targets}:
            raise UsageError(
                f"eval_models: two models are named '{name}'; give them distinct name: values"
            )
        args = dataclasses.replace(base_args, model=model, adapter=adapter)
        targets.append(EvalTarget(name, _slug(name, {t.slug for t in targets}), args))
    return targets


def _entry(model: str, adapter: str | None) -> Any:
    from danlu.config.eval_args import EvalModel

    return EvalModel(path=model, adapter=adapter)


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^\w.+-]+", "_", name).strip("._") or "model"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug
