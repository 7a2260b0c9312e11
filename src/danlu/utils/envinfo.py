"""`danlu env`: versions, CPU/RAM, GPUs with memory and compute capability, P2P topology, bf16."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from danlu.utils.system import available_cpus, total_ram_bytes

PACKAGES = (
    "danlu",
    "torch",
    "transformers",
    "peft",
    "datasets",
    "accelerate",
    "trl",
    "deepspeed",
    "bitsandbytes",
    "flash-attn",
    "safetensors",
    "tokenizers",
)


def collect() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu": {
            "model": cpu_model(),
            "cores_usable": available_cpus(),
            "torch_threads": torch.get_num_threads(),
            "bf16_instructions": cpu_bf16(),
        },
        "ram_gib": round(total_ram_bytes() / 2**30, 1),
        "gpus": _gpus(),
    }
    info["p2p"] = _p2p(len(info["gpus"]))
    info["topology"] = _nvidia_topo() if info["gpus"] else None
    return info


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16: where bf16 autocast makes CPU matmuls faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _gpus() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "index": i,
                "name": p.name,
                "memory_gib": round(p.total_memory / 2**30, 1),
                "compute_capability": f"{p.major}.{p.minor}",
                "bf16": p.major >= 8,
            }
        )
    return gpus


def _p2p(n: int) -> list[list[bool]] | None:
    import torch

    if n < 2:
        return None
    return [[i == j or torch.cuda.can_device_access_peer(i, j) for j in range(n)] for i in range(n)]


def _nvidia_topo() -> str | None:
    """`nvidia-smi topo -m`: NVLink (NV#) vs PCIe (PIX/PHB/SYS) between every GPU pair."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "topo", "-m"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def render(info: dict[str, Any]) -> str:
    cpu = info["cpu"]
    rows = [("python", info["python"]), ("platform", info["platform"])]
    rows += [(k, v or "-") for k, v in info["packages"].items()]
    rows += [
        ("cuda", info["cuda"] or "- (CPU build)"),
        (
            "cpu",
            f"{cpu['model']} ({cpu['cores_usable']} usable cores, "
            f"{cpu['torch_threads']} torch threads, bf16 instructions: "
            f"{'yes' if cpu['bf16_instructions'] else 'no'})",
        ),
        ("ram", f"{info['ram_gib']} GiB"),
    ]
    if not info["gpus"]:
        rows.append(("gpus", "none visible (check CUDA_VISIBLE_DEVICES / driver)"))
    for g in info["gpus"]:
        rows.append(
            (
                f"gpu {g['index']}",
                f"{g['name']}, {g['memory_gib']} GiB, "
                f"sm {g['compute_capability']}, bf16 {'yes' if g['bf16'] else 'no'}",
            )
        )
    if info["p2p"]:
        rows.append(
            ("peer-to-peer", " ".join("".join("Y" if x else "." for x in r) for r in info["p2p"]))
        )
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    if info["topology"]:
        text += "\n\nnvidia-smi topo -m:\n" + info["topology"]
    return text
