"""Several processes: relaunch under torchrun, one command per node, hostfiles, NCCL settings.

`danlu train CONFIG nproc_per_node=8` is the same run as `torchrun --nproc_per_node 8 -m danlu
train CONFIG`: the parent only builds the torchrun command and waits for it; the children see the
launcher's environment (WORLD_SIZE, RANK) and train. The same children start under `accelerate
launch -m danlu` and `deepspeed --module danlu`, which set that environment too.

What users get wrong by hand, and this owns: hostfiles with hostnames that resolve differently on
each node (refused: IPs only), a master port taken by an earlier run on the same machine (one node
uses torchrun's --standalone, which picks a free one), NCCL variables set on one node and not on
the others (they are config keys, so every node's command carries the same).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danlu.train.args import dist_strategy
from danlu.utils.dist import launched
from danlu.utils.errors import (
    RANK_ERRORS,
    DanluError,
    RuntimeFailure,
    UsageError,
    recorded_error,
)

NCCL_KEYS = {
    "nccl_ib_disable": "NCCL_IB_DISABLE",
    "nccl_socket_ifname": "NCCL_SOCKET_IFNAME",
    "nccl_p2p_disable": "NCCL_P2P_DISABLE",
    "nccl_debug": "NCCL_DEBUG",
}
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class Host:
    addr: str
    slots: int


@dataclass(frozen=True)
class Topology:
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int | None
    """None: one node, torchrun --standalone picks a free port."""
    nproc_per_node: int

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def nccl_env(cfg: Any) -> dict[str, str]:
    """The NCCL variables the config sets (booleans as 1/0, as NCCL reads them)."""
    env = {}
    for key, var in NCCL_KEYS.items():
        value = getattr(cfg, key)
        if value is not None:
            env[var] = str(int(value)) if isinstance(value, bool) else str(value)
    return env


def read_hostfile(path: str | Path) -> list[Host]:
    """`IP slots=N` lines (DeepSpeed's format; `#` comments). Errors name file:line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"hostfile: {path} does not exist")
    hosts: list[Host] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            hosts.append(_host_line(path, number, line, hosts))
    if not hosts:
        raise UsageError(f"hostfile {path}: no hosts (expected lines like `10.0.0.1 slots=8`)")
    return hosts


def _host_line(path: Path, number: int, line: str, seen: list[Host]) -> Host:
    where = f"hostfile {path}:{number}"
    parts = line.split()
    if len(parts) != 2 or not parts[1].startswith("slots="):
        raise UsageError(f"{where}: expected `IP slots=N`, got {line!r}")
    addr, slots = parts[0], parts[1].removeprefix("slots=")
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise UsageError(
            f"{where}: {addr!r} is not an IP address; use the node's IP (a hostname can resolve "
            "to a different interface, or not at all, on another node)"
        ) from None
    if not slots.isdigit() or int(slots) < 1:
        raise UsageError(f"{where}: slots must be a whole number >= 1, got {slots!r}")
    if any(h.addr == addr for h in seen):
        raise UsageError(f"{where}: {addr} is listed twice")
    return Host(addr, int(slots))


def topology(cfg: Any) -> Topology:
    """Nodes, ranks and rendezvous from the config, else the hostfile, else the environment."""
    if cfg.hostfile:
        return _from_hostfile(cfg, read_hostfile(cfg.hostfile))
    nnodes = _pick(cfg.nnodes, "NNODES", 1)
    port = cfg.master_port if cfg.master_port is not None else _env_int("MASTER_PORT")
    if port is None and nnodes > 1:
        port = DEFAULT_PORT
    return Topology(
        nnodes=nnodes,
        node_rank=_pick(cfg.node_rank, "NODE_RANK", 0),
        master_addr=cfg.master_addr or os.environ.get("MASTER_ADDR") or "127.0.0.1",
        master_port=port,
        nproc_per_node=cfg.nproc_per_node,
    )


def _from_hostfile(cfg: Any, hosts: list[Host]) -> Topology:
    slots = {h.slots for h in hosts}
    if len(slots) > 1:
        raise UsageError(
            f"hostfile {cfg.hostfile}: slots differ between nodes ({sorted(slots)}); torchrun "
            "starts the same number of processes on every node"
        )
    if cfg.nnodes is not None and cfg.nnodes != len(hosts):
        raise UsageError(f"nnodes: {cfg.nnodes}, but hostfile {cfg.hostfile} lists {len(hosts)}")
    local = _local_addresses()
    here = [i for i, h in enumerate(hosts) if h.addr in local]
    node_rank = cfg.node_rank if cfg.node_rank is not None else (here[0] if here else 0)
    return Topology(
        nnodes=len(hosts),
        node_rank=node_rank,
        master_addr=hosts[0].addr,
        master_port=cfg.master_port or DEFAULT_PORT,
        nproc_per_node=slots.pop(),
    )


def _local_addresses() -> set[str]:
    import psutil

    return {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}


def _pick(value: int | None, var: str, default: int) -> int:
    if value is not None:
        return value
    env = _env_int(var)
    return env if env is not None else default


def _env_int(var: str) -> int | None:
    value = os.environ.get(var)
    if value in (None, ""):
        return None
    if not value.isdigit():
        raise UsageError(f"environment: {var}={value!r} is not a whole number")
    return int(value)


def wants_launch(cfg: Any) -> bool:
    """True when this `danlu train` should start the processes instead of training itself:
    several of them, or DeepSpeed even on one (without a launcher's environment it looks for
    MPI to find its rank)."""
    if launched():
        return False
    return topology(cfg).world_size > 1 or dist_strategy(cfg) == "deepspeed"


def torchrun_argv(topo: Topology, node_rank: int, train_argv: list[str]) -> list[str]:
    """`python -m torch.distributed.run ... -m danlu train <train_argv>` for one node."""
    argv = [sys.executable, "-m", "torch.distributed.run"]
    if topo.nnodes == 1 and topo.master_port is None:
        argv += ["--standalone"]
    else:
        argv += ["--nnodes", str(topo.nnodes), "--node_rank", str(node_rank)]
        argv += ["--master_addr", topo.master_addr, "--master_port", str(topo.master_port)]
    argv += ["--nproc_per_node", str(topo.nproc_per_node), "-m", "danlu", "train", *train_argv]
    return argv


def node_commands(cfg: Any, train_argv: list[str]) -> list[str]:
    """The shell command to run on each node, NCCL settings included (same on every node)."""
    topo = topology(cfg)
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in nccl_env(cfg).items())
    lines = []
    for node in range(topo.nnodes):
        argv = torchrun_argv(topo, node, train_argv)
        argv[0] = "python"  # the other nodes' interpreter, not this machine's path
        lines.append(" ".join(filter(None, [prefix, shlex.join(argv)])))
    return lines


def relaunch(cfg: Any, train_argv: list[str]) -> int:
    """Run this node's share of the job under torchrun (in this process: its agent starts and
    watches the ranks); 0, or the failing rank's one-line error raised here.

    torchrun ends the other ranks when one fails (so none waits forever at a barrier) and then
    reports the failure as a traceback of its own; the ranks' lines are collected instead and
    the first failing rank's is raised, so it is the last line the user sees.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    topo = topology(cfg)
    argv = torchrun_argv(topo, topo.node_rank, train_argv)
    print(f"launch: {shlex.join(argv)}", file=sys.stderr, flush=True)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    with (
        tempfile.TemporaryDirectory(prefix="danlu-ranks-") as folder,
        _env({**nccl_env(cfg), RANK_ERRORS: folder}),
    ):
        try:
            run(parse_args(argv[3:]))  # what follows `python -m torch.distributed.run`
        except ChildFailedError as exc:
            raise _rank_failure(Path(folder), exc) from None
    return 0


def _rank_failure(folder: Path, exc: Any) -> DanluError:
    recorded = recorded_error(folder)
    if recorded is not None:
        return recorded
    rank, failure = min(exc.failures.items())  # keyed by global rank
    return RuntimeFailure(
        f"rank {rank} failed with exit code {failure.exitcode} (no danlu error line: its own "
        "output, above, says why)"
    )


@contextlib.contextmanager
def _signals_kept() -> Iterator[None]:
    """torchrun's agent turns SIGTERM/SIGINT/... into exceptions for its own loop; give this
    process its handlers back afterwards (a forked worker would inherit torchrun's)."""
    names = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
    kept = {s: signal.getsignal(s) for n in names if (s := getattr(signal, n, None)) is not None}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the ranks torchrun starts, then restore them."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
