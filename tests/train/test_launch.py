"""Launching several processes: hostfiles, topology from config/env, torchrun and per-node
commands, NCCL settings, and the CLI flags a launcher passes."""

from __future__ import annotations

import sys

import pytest

from danlu.cli import main
from danlu.config import load_config
from danlu.train import launch
from danlu.utils.errors import UsageError

DIST_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NNODES", "NODE_RANK",
            "MASTER_ADDR", "MASTER_PORT")  # fmt: skip


@pytest.fixture(autouse=True)
def _no_launcher_env(monkeypatch):
    for var in DIST_ENV:
        monkeypatch.delenv(var, raising=False)


def _hostfile(tmp_path, text: str, name: str = "hostfile"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_hostfile_reads_ips_slots_and_comments(tmp_path):
    path = _hostfile(tmp_path, "# two nodes\n10.0.0.1 slots=8\n\n10.0.0.2 slots=8  # second\n")
    assert launch.read_hostfile(path) == [launch.Host("10.0.0.1", 8), launch.Host("10.0.0.2", 8)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node1 slots=8\n", r"hostfile .*:1: 'node1' is not an IP address; use the node's IP"),
        ("10.0.0.1 slots=8\n10.0.0.2\n", r"hostfile .*:2: expected `IP slots=N`, got '10.0.0.2'"),
        ("10.0.0.1 slots=0\n", r"hostfile .*:1: slots must be a whole number >= 1, got '0'"),
        ("10.0.0.1 slots=2\n10.0.0.1 slots=2\n", r"hostfile .*:2: 10.0.0.1 is listed twice"),
        ("# nothing\n", r"hostfile .*: no hosts"),
    ],
)
def test_bad_hostfiles_name_the_line(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        launch.read_hostfile(_hostfile(tmp_path, text))


def test_hostfile_sets_topology_and_refuses_uneven_slots(tmp_path):
    path = _hostfile(tmp_path, "10.0.0.1 slots=4\n10.0.0.2 slots=4\n10.0.0.3 slots=4\n")
    topo = launch.topology(load_config(None, [f"hostfile={path}"]))
    assert (topo.nnodes, topo.master_addr, topo.nproc_per_node, topo.world_size) == (
        3, "10.0.0.1", 4, 12)  # fmt: skip
    assert topo.master_port == launch.DEFAULT_PORT
    uneven = _hostfile(tmp_path, "10.0.0.1 slots=4\n10.0.0.2 slots=2\n", "uneven")
    with pytest.raises(UsageError, match=r"slots differ between nodes \(\[2, 4\]\)"):
        launch.topology(load_config(None, [f"hostfile={uneven}"]))
    with pytest.raises(UsageError, match=r"nnodes: 2, but hostfile .* lists 3"):
        launch.topology(load_config(None, [f"hostfile={path}", "nnodes=2"]))


def test_hostfile_node_rank_is_this_machines_line(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "_local_addresses", lambda: {"127.0.0.1", "10.0.0.2"})
    path = _hostfile(tmp_path, "10.0.0.1 slots=2\n10.0.0.2 slots=2\n")
    assert launch.topology(load_config(None, [f"hostfile={path}"])).node_rank == 1


def test_topology_config_beats_environment_beats_default(monkeypatch):
    cfg = load_config(None, ["nproc_per_node=8"])
    assert launch.topology(cfg) == launch.Topology(1, 0, "127.0.0.1", None, 8)
    monkeypatch.setenv("NNODES", "3")
    monkeypatch.setenv("NODE_RANK", "2")
    monkeypatch.setenv("MASTER_ADDR", "10.1.1.1")
    assert launch.topology(cfg) == launch.Topology(3, 2, "10.1.1.1", 29500, 8)
    cfg = load_config(None, ["nnodes=2", "node_rank=1", "master_addr=10.9.9.9", "master_port=1234"])
    assert launch.topology(cfg) == launch.Topology(2, 1, "10.9.9.9", 1234, 1)
    monkeypatch.setenv("NNODES", "two")
    with pytest.raises(UsageError, match=r"environment: NNODES='two' is not a whole number"):
        launch.topology(load_config(None, []))


def test_torchrun_argv_one_node_is_standalone_several_nodes_rendezvous():
    one = launch.Topology(1, 0, "127.0.0.1", None, 2)
    assert launch.torchrun_argv(one, 0, ["c.yaml", "max_steps=3"]) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "danlu", "train", "c.yaml", "max_steps=3"]  # fmt: skip
    two = launch.Topology(2, 0, "10.0.0.1", 29500, 8)
    argv = launch.torchrun_argv(two, 1, ["c.yaml"])
    assert argv[3:13] == ["--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1",
                          "--master_port", "29500", "--nproc_per_node", "8"]  # fmt: skip


def test_node_commands_carry_the_same_nccl_settings_on_every_node():
    cfg = load_config(None, [
        "nnodes=2", "master_addr=10.0.0.1", "nproc_per_node=8", "nccl_ib_disable=true",
        "nccl_socket_ifname=eth0", "nccl_debug=INFO"])  # fmt: skip
    lines = launch.node_commands(cfg, ["c.yaml"])
    assert len(lines) == 2
    for rank, line in enumerate(lines):
        assert line.startswith("NCCL_IB_DISABLE=1 NCCL_SOCKET_IFNAME=eth0 NCCL_DEBUG=INFO python ")
        assert f"--node_rank {rank} " in line and line.endswith("-m danlu train c.yaml")
    assert launch.nccl_env(load_config(None, ["nccl_p2p_disable=false"])) == {
        "NCCL_P2P_DISABLE": "0"}  # fmt: skip


def test_wants_launch_only_outside_a_launcher(monkeypatch):
    cfg = load_config(None, ["nproc_per_node=2"])
    assert launch.wants_launch(cfg)
    assert not launch.wants_launch(load_config(None, []))
    # DeepSpeed on one process still needs a launcher's environment (else it looks for MPI)
    assert launch.wants_launch(load_config(None, ["deepspeed=zero2"]))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not launch.wants_launch(cfg)  # a child of torchrun trains; it does not relaunch


def test_cli_print_launch_and_late_overrides(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("nnodes: 2\nmaster_addr: 10.0.0.1\n")
    assert main(["train", str(cfg), "--print-launch", "--nproc", "4", "max_steps=7"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# node 0" and out[2] == "# node 1"
    assert "--nproc_per_node 4 -m danlu train" in out[1] and "max_steps=7" in out[3]
    assert "nproc_per_node=4" in out[3]


def test_cli_accepts_the_deepspeed_launchers_local_rank(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("nproc_per_node: 2\n")
    assert main(["train", str(cfg), "--local_rank=1", "--print-launch"]) == 0
    assert "--standalone" in capsys.readouterr().out
    # the DeepSpeed launcher puts it before the subcommand: python -m danlu --local_rank=0 train
    assert main(["--local_rank=0", "train", str(cfg), "--print-launch"]) == 0
    with pytest.raises(SystemExit):
        main(["train", str(cfg), "--bogus"])
