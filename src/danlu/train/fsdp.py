"""`distributed: fsdp`: PyTorch's FSDP2 (`fully_shard`), applied by danlu, checkpointed by name.

Why our own wrapping instead of accelerate's FSDP plugin: accelerate 1.15's FSDP path does not run
on CPU ("no available devices"), and one path that runs on CPU (gloo) and GPU (nccl) alike is one
path the tests check. FSDP2 shards each decoder block (the class the model names in
`_no_split_modules`) and then the root (embeddings, norm, head, adapters outside the blocks).

Checkpoints hold full tensors by parameter name, gathered to rank 0 (`trainable.safetensors`,
`optimizer.pt`), so a run resumes on any number of processes: loading broadcasts rank 0's copy
and every rank keeps its own shard. For adapters these are small; for full fine-tuning of a large
model, rank 0 needs CPU memory for one full copy of the weights and optimizer states.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError

TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
# Prompt-learning methods keep their virtual tokens in an encoder outside the model's blocks
# that PEFT calls outside forward() (to build the past key values): FSDP cannot gather it there.
UNSUPPORTED = ("prefix", "ptuning_v2", "prompt", "ptuning")


def check_method(method: str) -> None:
    if method in UNSUPPORTED:
        raise UsageError(
            f"distributed: fsdp does not support method {method} (PEFT runs its prompt encoder "
            "outside the sharded forward); use distributed: ddp or deepspeed: zero2"
        )


def block_classes(model: Any) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    if not names:
        raise UsageError(
            f"distributed: fsdp: {type(base).__name__} does not name its decoder block class "
            "(_no_split_modules), so it cannot be wrapped block by block; use deepspeed"
        )
    return names


def shard(
    model: Any,
    sharding: str,
    offload: bool,
    nnodes: int,
    device_type: str,
    compute_dtype: Any = None,
) -> Any:
    """Apply `fully_shard` to every decoder block, then to the root. Returns the model.

    With `compute_dtype` (bf16 runs) the shards stay float32 (the optimizer's master
    weights) and are gathered in the compute dtype: half the all-gather traffic and memory,
    while gradients are reduced in float32.
    """
    import torch
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kwargs: dict[str, Any] = {
        "mesh": _mesh(sharding, nnodes, device_type),
        # shard_grad_op keeps a block's gathered weights from forward to backward (ZeRO-2-like)
        "reshard_after_forward": sharding != "shard_grad_op",
    }
    if offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    if compute_dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=compute_dtype, reduce_dtype=torch.float32
        )
    names = block_classes(model)
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _mesh(sharding: str, nnodes: int, device_type: str) -> Any:
    """1-D over all ranks; hybrid_shard: (nodes, ranks per node), sharded within a node only."""
    from torch.distributed.device_mesh import init_device_mesh

    from danlu.utils.dist import world_size

    world = world_size()
    if sharding == "hybrid_shard" and nnodes > 1:
        return init_device_mesh(
            device_type, (nnodes, world // nnodes), mesh_dim_names=("replicate", "shard")
        )
    return init_device_mesh(device_type, (world,), mesh_dim_names=("shard",))


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _options(broadcast_from_rank0: bool = False, **kwargs: Any) -> Any:
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # one process (resuming a sharded run's checkpoint without a launcher): nothing to broadcast
    broadcast = broadcast_from_rank0 and dist.is_available() and dist.is_initialized()
    return StateDictOptions(
        full_state_dict=True, cpu_offload=True, broadcast_from_rank0=broadcast, **kwargs
    )


def gather_trainable(model: Any) -> dict[str, Any]:
    """Full trainable tensors by name on rank 0 ({} elsewhere). Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(ignore_frozen_params=True))


def gather_all(model: Any) -> dict[str, Any]:
    """Every tensor of the model, full, on rank 0 (for a full model's `final/`)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def save_trainable(state: dict[str, Any], folder: Path) -> None:
    from safetensors.torch import save_file

    # tied weights (embeddings = head) share storage; safetensors refuses shared tensors
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(folder / TRAINABLE))


def load_trainable(model: Any, folder: Path, main: bool) -> None:
    """Load `trainable.safetensors` (read on rank 0, broadcast, each rank keeps its shard)."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    state = load_file(str(folder / TRAINABLE)) if main else {}
    set_model_state_dict(model, state, options=_options(broadcast_from_rank0=True, strict=False))


def save_optimizer(model: Any, optimizer: Any, folder: Path, main: bool) -> None:
    import torch
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_options())
    if main:
        torch.save(state, folder / OPTIMIZER)


def load_optimizer(model: Any, optimizer: Any, folder: Path, main: bool) -> None:
    import torch
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    state = torch.load(folder / OPTIMIZER, weights_only=True) if main else {}
    set_optimizer_state_dict(model, optimizer, state, options=_options(broadcast_from_rank0=True))
