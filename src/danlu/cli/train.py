"""`danlu train CONFIG [k=v ...]`: one run, laid out as DESIGN §5, resumable with `auto`.

With `nproc_per_node` > 1 (or `--nproc N`, or several nodes) it relaunches itself under torchrun;
started by torchrun, accelerate or the DeepSpeed launcher, it is one rank of that job.
"""

from __future__ import annotations

import argparse
import logging
import sys

from danlu.cli.common import add_config_arguments, load_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or step lines")
    parser.add_argument(
        "--nproc", type=int, metavar="N", help="processes on this node (= nproc_per_node=N)"
    )
    parser.add_argument(
        "--print-launch",
        action="store_true",
        help="print the command to run on each node (nnodes, hostfile, ...) and exit",
    )
    # The DeepSpeed launcher appends --local_rank=N; the rank is read from LOCAL_RANK instead.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from danlu.train import launch

    if args.nproc is not None:
        args.overrides = [*args.overrides, f"nproc_per_node={args.nproc}"]
    cfg = load_from_args(args)
    argv = [args.config, *args.overrides] + (["--quiet"] if args.quiet else [])
    if args.print_launch:
        for node, line in enumerate(launch.node_commands(cfg, argv)):
            print(f"# node {node}\n{line}")
        return 0
    if launch.wants_launch(cfg):
        from danlu.train.inputs import check_inputs

        check_inputs(cfg)  # before any rank starts: a bad input is one line from one process
        return launch.relaunch(cfg, argv)
    return _train(cfg, args.quiet)


def _train(cfg: object, quiet: bool) -> int:
    from danlu.train.engine import train

    if not quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from danlu.utils.dist import is_main

    result = train(cfg, log=(lambda _: None) if quiet else _stderr)
    if is_main():  # the job's one answer, not one per rank
        print(result.final_dir)
    return 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
