"""Planner decisions on fixed hardware descriptions."""

from __future__ import annotations

import pytest

from danlu.plan import Hardware, Setup, load_arch, plan
from danlu.plan.hardware import GIB, parse_gpus, parse_rate
from danlu.utils.errors import UsageError


def _plan(model, method, hw, global_batch=32, seq=1024):
    return plan(load_arch(model), Setup(method=method, seq_len=seq), hw, global_batch)


def test_7b_lora_on_one_24gb_gpu_uses_checkpointing_not_qlora():
    p = _plan("llama2-7b", "lora", Hardware(gpus_per_node=1, gpu_bytes=24 * GIB))
    c = p.chosen
    assert (c.layout.name, c.setup.grad_ckpt, c.setup.method) == ("single", True, "lora")
    assert c.setup.micro_batch * c.setup.accumulation == 32
    plain = next(o for o in p.options if o.layout.name == "single" and not o.setup.grad_ckpt)
    assert not plain.fits  # 12.6 GiB of weights + activations of 1024 tokens exceed 21.6 GiB


def test_7b_full_on_8x80gb_nvlink_uses_zero2():
    p = _plan("llama2-7b", "full", Hardware(gpus_per_node=8, gpu_bytes=80 * GIB, nvlink=True))
    assert p.chosen.layout.name == "zero2" and not p.chosen.setup.grad_ckpt
    ddp = next(o for o in p.options if o.layout.name == "ddp")
    assert not ddp.fits  # 16 bytes x 6.7B = 108 GB of model states


def test_65b_full_on_4_nodes_over_10gbps_uses_3d_parallelism():
    hw = Hardware(gpus_per_node=8, gpu_bytes=80 * GIB, nodes=4, nvlink=True, network_gbps=10)
    c = _plan("llama-65b", "full", hw).chosen
    assert (c.setup.tp, c.setup.pp, c.setup.dp, c.setup.zero) == (8, 4, 1, 1)
    assert c.layout.name.startswith("3d")


def test_65b_zero3_over_10gbps_is_rejected_for_its_traffic():
    """fp16 ZeRO-3 moves 3 x 130 GB per step: > 300 s on 10 Gb/s, so 3D wins by far."""
    hw = Hardware(gpus_per_node=8, gpu_bytes=80 * GIB, nodes=4, nvlink=True, network_gbps=10)
    p = _plan("llama-65b", "full", hw)
    zero3 = next(o for o in p.options if o.layout.name == "zero3" and not o.setup.grad_ckpt)
    assert zero3.fits and zero3.seconds > 300 > 10 * p.chosen.seconds


def test_one_node_without_nvlink_fitting_model_uses_ddp():
    p = _plan("qwen2.5-0.5b", "full", Hardware(gpus_per_node=4, gpu_bytes=80 * GIB))
    assert p.chosen.layout.name == "ddp"


def test_nothing_fits_says_what_would():
    hw = Hardware(gpus_per_node=1, gpu_bytes=24 * GIB, host_bytes=64 * GIB)
    p = _plan("llama2-13b", "full", hw)
    assert p.chosen is None
    assert "more 24 GB GPU(s)" in p.suggestion and "QLoRA" in p.suggestion


def test_parse_hardware_strings():
    assert parse_gpus("2x24GB") == (2, 24 * GIB)
    assert parse_rate("10Gbps") == 10.0 and parse_rate("25GB/s") == 200.0
    with pytest.raises(UsageError, match="COUNTxMEMORY"):
        parse_gpus("24GB")
