"""docs/config.md is generated from the dataclasses and must not drift."""

from pathlib import Path

from danlu.config.reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_config_reference_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == render(), "docs/config.md is stale: run `make docs`"


def test_reference_lists_every_key():
    from danlu.config.schema import key_index

    text = render()
    for key in key_index():
        assert f"| `{key}` |" in text
