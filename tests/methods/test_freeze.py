"""`freeze`: exactly the chosen blocks train, found generically (incl. ChatGLM's naming)."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import build_tiny_model
from tests.methods.helpers import prepared

from danlu.methods import trainable_names
from danlu.methods.freeze import decoder_blocks
from danlu.utils.errors import UsageError


@pytest.fixture(scope="module")
def four_layer_dir(tmp_path_factory, tokenizer):
    return build_tiny_model(tmp_path_factory.mktemp("tiny4"), tokenizer, layers=4, hidden=32)


def _blocks_trained(model) -> set[int]:
    return {int(n.split(".")[2]) for n in trainable_names(model) if n.startswith("model.layers.")}


@pytest.mark.parametrize(("n", "blocks"), [(2, {2, 3}), (-1, {0}), (4, {0, 1, 2, 3})])
def test_trains_the_last_or_first_n_blocks(n, blocks, four_layer_dir):
    model, _ = prepared(four_layer_dir, "freeze", freeze_trainable_layers=n)
    assert _blocks_trained(model) == blocks
    assert all(n.startswith("model.layers.") for n in trainable_names(model))


def test_named_modules_train_too(four_layer_dir):
    model, _ = prepared(
        four_layer_dir,
        "freeze",
        freeze_trainable_layers=0,
        freeze_trainable_modules=["norm.weight"],
    )
    assert trainable_names(model) == {n for n, _ in model.named_parameters() if "norm.weight" in n}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"freeze_trainable_layers": 9}, "only 4 decoder blocks"),
        ({"freeze_trainable_modules": ["nonexistent"]}, "nonexistent"),
    ],
)
def test_bad_settings_are_refused(extra, message, four_layer_dir):
    with pytest.raises(UsageError, match=message):
        prepared(four_layer_dir, "freeze", **extra)


def test_blocks_found_under_chatglm_naming():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = torch.nn.Linear(2, 2)

    class Glm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"num_layers": 3})()
            self.transformer = torch.nn.Module()
            self.transformer.encoder = torch.nn.Module()
            self.transformer.encoder.layers = torch.nn.ModuleList(Block() for _ in range(3))
            self.transformer.heads = torch.nn.ModuleList([torch.nn.Linear(2, 2)] * 5)

    path, blocks = decoder_blocks(Glm())
    assert path == "transformer.encoder.layers" and len(blocks) == 3
