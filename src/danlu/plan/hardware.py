"""Hardware descriptions for the planner: `--gpus 2x24GB`, `--network 10Gbps`, detection."""

from __future__ import annotations

import re
from dataclasses import dataclass

from danlu.utils.errors import UsageError

GIB = 2**30
NVLINK_GBPS = 2400.0
"""A100 NVLink: ~300 GB/s per direction."""
PCIE_GBPS = 128.0
"""GPU-to-GPU through PCIe 4.0 x16 and the host: ~16 GB/s in practice."""


@dataclass(frozen=True)
class Hardware:
    gpus_per_node: int
    gpu_bytes: float
    nodes: int = 1
    nvlink: bool = False
    network_gbps: float = 100.0
    """Between nodes, gigabits per second."""
    tflops: float = 312.0
    """Peak 16-bit TFLOPS of one GPU (A100: 312); only the ranking of plans depends on it."""
    host_bytes: float | None = None
    """RAM per node; None = not checked (offload plans then only report what they need)."""

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def intra_gbps(self) -> float:
        return NVLINK_GBPS if self.nvlink else PCIE_GBPS

    def describe(self) -> str:
        link = "NVLink" if self.nvlink else "PCIe"
        nodes = f"{self.nodes} nodes x " if self.nodes > 1 else ""
        net = f", {self.network_gbps:g} Gb/s between nodes" if self.nodes > 1 else ""
        return f"{nodes}{self.gpus_per_node}x{self.gpu_bytes / GIB:g}GiB ({link}{net})"


_GPUS = re.compile(r"^\s*(\d+)\s*[x×*]\s*(\d+(?:\.\d+)?)\s*(gb|gib|g)?\s*$", re.I)
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(gbps|gbit/s|gb/s|gbit|g)?\s*$", re.I)


def parse_gpus(text: str) -> tuple[int, float]:
    """'2x24GB' -> (2, 24 GiB). GPU memory sizes are binary: a '24 GB' card has 24 GiB."""
    m = _GPUS.match(text)
    if not m or int(m.group(1)) < 1:
        raise UsageError(f"--gpus '{text}': expected COUNTxMEMORY, e.g. 2x24GB or 8x80GB")
    return int(m.group(1)), float(m.group(2)) * GIB


def parse_rate(text: str) -> float:
    """'10Gbps' -> 10.0 gigabits/s; '25GB/s' (bytes) -> 200.0."""
    m = _RATE.match(text)
    if not m:
        raise UsageError(f"--network '{text}': expected a rate such as 10Gbps, 100Gbps or 25GB/s")
    value = float(m.group(1))
    return value * 8 if (m.group(2) or "").upper() == "GB/S" and "B/" in m.group(2) else value


def detect_gpus() -> tuple[int, float]:
    """Visible CUDA devices (count, smallest memory); a usage error when there are none."""
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # a broken CUDA install reads as "no GPU"
        n = 0
    if n == 0:
        raise UsageError(
            "no GPU detected; describe the target with --gpus COUNTxMEMORY, e.g. 2x24GB"
        )
    smallest = min(torch.cuda.get_device_properties(i).total_memory for i in range(n))
    return n, float(smallest)
