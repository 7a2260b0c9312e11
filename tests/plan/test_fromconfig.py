"""A run config -> the estimator's Setup: processes and sharding are read from the config."""

from __future__ import annotations

import pytest

from danlu.config import load_config
from danlu.plan.fromconfig import setup_from_config


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], {}),
        (["nproc_per_node=8"], {"dp": 8}),
        (["nproc_per_node=8", "nnodes=3", "deepspeed=zero3_offload"],
         {"dp": 24, "zero": 3, "offload_optimizer": "cpu", "offload_params": "cpu"}),
        (["nproc_per_node=4", "distributed=fsdp"], {"dp": 4, "zero": 3}),
        (["nproc_per_node=4", "distributed=fsdp", "fsdp_sharding=shard_grad_op"],
         {"dp": 4, "zero": 2}),
        (["nproc_per_node=2", "distributed=fsdp", "fsdp_offload=true"],
         {"dp": 2, "zero": 3, "offload_optimizer": "cpu", "offload_params": "cpu"}),
    ],
)  # fmt: skip
def test_processes_and_sharding(overrides, expected):
    _, fields = setup_from_config(load_config(None, overrides))
    keys = ("dp", "zero", "offload_optimizer", "offload_params")
    assert {k: fields[k] for k in keys if k in fields} == expected


def test_a_launched_rank_counts_the_launchers_world(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "16")
    _, fields = setup_from_config(load_config(None, ["deepspeed=zero2"]))
    assert (fields["dp"], fields["zero"]) == (16, 2)
