"""Text renderings of an Estimate and a Plan for the terminal."""

from __future__ import annotations

import yaml

from danlu.plan.estimate import Estimate
from danlu.plan.fromconfig import config_fragment
from danlu.plan.hardware import GIB, Hardware
from danlu.plan.planner import HEADROOM, Option, Plan
from danlu.plan.setup import Setup
from danlu.plan.sources import known_architectures

EMBEDDED = ("smollm2-135m-instruct",)

LABELS = {
    "weights": "weights",
    "gradients": "gradients",
    "optimizer_states": "optimizer states",
    "master_weights": "fp32 master weights",
    "activations": "activations (blocks)",
    "logits_loss": "logits + loss (B·S·V)",
    "optimizer_step_temp": "optimizer step temporaries",
    "zero3_buffers": "ZeRO-3 gathered blocks",
    "reference_model": "reference (frozen copy)",
    "generation_kv_cache": "KV cache (grpo sampling)",
    "kv_cache": "KV cache",
    "overhead": "framework (CUDA context)",
}


def gib(n: float) -> str:
    return f"{n / GIB:9.2f} GiB"


def estimate_table(e: Estimate, s: Setup) -> str:
    """Component table, per device, then peak, host RAM and traffic."""
    head = (
        f"{e.model}: {e.params / 1e9:.3f}B parameters, {e.trainable:,} trained "
        f"({s.stage}, {s.method}, weights {s.base_weights}, batch {s.micro_batch} x {s.seq_len})"
    )
    lines = [head, "per device:"]
    lines += [f"  {LABELS.get(k, k):30}{gib(v)}" for k, v in e.components.items() if v]
    lines.append(f"  {'peak':30}{gib(e.peak)}")
    for k, v in e.host.items():
        lines.append(f"host RAM, {k.replace('_', ' '):20}{gib(v)}")
    if e.nvme:
        lines.append(f"NVMe offload:{'':19}{gib(e.nvme)}")
    if e.comm_bytes_per_step:
        lines.append(f"data-parallel traffic per step: {e.comm_bytes_per_step / 1e9:.1f} GB")
    lines += [f"note: {n}" for n in e.notes]
    return "\n".join(lines)


def option_row(o: Option, hw: Hardware, chosen: Option | None) -> str:
    s = o.setup
    mark = "->" if o is chosen else "  "
    gc = "+ckpt" if s.grad_ckpt else ""
    verdict = (
        f"fits, {o.seconds:7.2f} s/step"
        if o.fits
        else f"does not fit even at micro-batch 1 (> {HEADROOM:.0%} of "
        f"{hw.gpu_bytes / GIB:.0f} GiB)"
    )
    size = f"mb {s.micro_batch:>3} x acc {s.accumulation:<3}" if o.fits else " " * 16
    return f"{mark} {o.layout.name + gc:34} {size} {o.est.peak / GIB:7.1f} GiB  {verdict}"


def launch_command(hw: Hardware, config_path: str = "run.yaml") -> str:
    if hw.total_gpus == 1:
        return f"danlu train {config_path}"
    if hw.nodes == 1:
        return f"torchrun --nproc_per_node {hw.gpus_per_node} -m danlu train {config_path}"
    return (
        f"torchrun --nnodes {hw.nodes} --nproc_per_node {hw.gpus_per_node} "
        f"--node_rank $NODE_RANK --master_addr $MASTER_ADDR --master_port 29500 "
        f"-m danlu train {config_path}   # on every node"
    )


def plan_text(p: Plan, hw: Hardware, model: str) -> str:
    lines = [f"hardware: {hw.describe()}; global batch {p.global_batch}", "candidates:"]
    lines += [option_row(o, hw, p.chosen) for o in p.options]
    if p.chosen is None:
        lines.append(f"nothing fits: {p.suggestion}")
        return "\n".join(lines)
    c = p.chosen
    lines.append(
        f"chosen: {c.layout.name}{' + gradient checkpointing' if c.setup.grad_ckpt else ''}"
        f" — peak {c.est.peak / GIB:.1f} GiB of {hw.gpu_bytes / GIB:.0f} GiB, "
        f"~{c.seconds:.2f} s/step (estimate)"
    )
    if c.setup.tp > 1 or c.setup.pp > 1:
        lines.append(
            f"# tensor parallel {c.setup.tp}, pipeline parallel {c.setup.pp}: "
            "danlu train has no keys for these yet; use a Megatron-style launcher"
        )
    lines.append("config (run.yaml):")
    if model.lower() in known_architectures() and model.lower() not in EMBEDDED:
        lines.append(
            f"  # '{model}' names an architecture: set model: to its local folder or hub id"
        )
    frag = yaml.safe_dump(config_fragment(model, c.setup), sort_keys=False, allow_unicode=True)
    lines += ["  " + x for x in frag.splitlines()]
    lines.append(f"launch: {launch_command(hw)}")
    return "\n".join(lines)
