"""`danlu plan`: the fastest configuration that fits the GPUs, with its config and launch command."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from danlu.cli.estimate import add_model_arguments, setup_from_args
from danlu.plan import Hardware, load_arch, plan
from danlu.plan.fromconfig import config_fragment
from danlu.plan.hardware import GIB, detect_gpus, parse_gpus, parse_rate
from danlu.plan.render import launch_command, plan_text
from danlu.utils.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    a = parser.add_argument
    a("--gpus", help="GPUs per node as COUNTxMEMORY, e.g. 2x24GB (default: detect)")
    a("--nodes", type=int, default=1, help="number of nodes (default 1)")
    a("--nvlink", action="store_true", help="GPUs in a node are linked by NVLink (default PCIe)")
    a("--network", default="100Gbps", help="bandwidth between nodes, e.g. 10Gbps (default 100Gbps)")
    a("--tflops", type=float, default=312.0, help="peak 16-bit TFLOPS per GPU (default 312, A100)")
    a("--host-ram-gb", type=float, help="RAM per node, to check offload plans (default: unchecked)")
    a("--global-batch", type=int, default=32, help="sequences per optimizer step (default 32)")
    a("--json", action="store_true", help="print JSON instead of text")


def hardware_from_args(args: argparse.Namespace) -> Hardware:
    count, mem = parse_gpus(args.gpus) if args.gpus else detect_gpus()
    if args.nodes < 1:
        raise UsageError(f"--nodes must be >= 1, got {args.nodes}")
    host = args.host_ram_gb * GIB if args.host_ram_gb else None
    return Hardware(
        gpus_per_node=count,
        gpu_bytes=mem,
        nodes=args.nodes,
        nvlink=args.nvlink,
        network_gbps=parse_rate(args.network),
        tflops=args.tflops,
        host_bytes=host,
    )


def run(args: argparse.Namespace) -> int:
    if args.global_batch < 1:
        raise UsageError(f"--global-batch must be >= 1, got {args.global_batch}")
    hw = hardware_from_args(args)
    model, base = setup_from_args(args)
    result = plan(load_arch(model), base, hw, args.global_batch)
    if not args.json:
        print(plan_text(result, hw, model))
        return 0 if result.chosen else 1
    chosen = result.chosen
    print(
        json.dumps(
            {
                "hardware": asdict(hw),
                "global_batch": result.global_batch,
                "chosen": chosen
                and {
                    "layout": chosen.layout.name,
                    "peak_bytes": chosen.est.peak,
                    "seconds_per_step": chosen.seconds,
                    "config": config_fragment(model, chosen.setup),
                    "launch": launch_command(hw),
                },
                "options": [
                    {
                        "layout": o.layout.name,
                        "gradient_checkpointing": o.setup.grad_ckpt,
                        "fits": o.fits,
                        "micro_batch": o.setup.micro_batch,
                        "peak_bytes": o.est.peak,
                        "seconds_per_step": o.seconds,
                    }
                    for o in result.options
                ],
                "suggestion": result.suggestion,
            },
            indent=2,
        )
    )
    return 0 if chosen else 1
