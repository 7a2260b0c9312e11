"""grpo's sampling through vLLM (`use_vllm: true`, a CUDA GPU with vllm installed): each rank
runs its own vLLM engine beside training (colocated, `vllm_gpu_memory_utilization` of the
GPU), loaded once with the base weights; every sampling round hands it the adapter as it is
now, saved by PEFT into a scratch folder and passed as a new `LoRARequest`. Only vLLM's public
API is used (`LLM`, `SamplingParams`, `LoRARequest`, token-id prompts): no weight copying into
its internals, which is why it serves adapter methods (lora, qlora) and not full fine-tuning.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError

VLLM_METHODS = ("lora", "qlora")


def check_vllm(method: str) -> None:
    """The one-line reasons use_vllm cannot run here, before any model loads."""
    if method not in VLLM_METHODS:
        raise UsageError(
            f"use_vllm: serves the adapter to vLLM each round, so it needs method lora or qlora "
            f"(got {method}); set use_vllm: false to sample with transformers"
        )
    if importlib.util.find_spec("vllm") is None:
        raise UsageError("use_vllm: vllm is not installed (pip install vllm, on a CUDA machine)")
    import torch

    if not torch.cuda.is_available():
        raise UsageError(
            "use_vllm: needs a CUDA GPU; set use_vllm: false to sample on this machine"
        )


class VllmSampler:
    """`sample(policy, prompts, params, stops) -> rows of completion token ids`."""

    def __init__(self, llm: Any) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="danlu-vllm-adapter-"))
        self.round = 0
        self.llm = llm

    def sample(self, policy: Any, prompts: list[list[int]], n: int, limit: int, temperature: float,
               stops: frozenset[int]) -> list[list[int]]:  # fmt: skip
        """`n` answers per prompt, answer j of prompt i at row i * n + j."""
        import torch
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        self.round += 1
        adapter = self.folder / f"round-{self.round}"
        policy.save_pretrained(str(adapter))  # the adapter as trained so far (PEFT's format)
        # the seed drawn from torch's generator, whose state checkpoints keep: a resumed run
        # samples what the uninterrupted one did
        params = SamplingParams(
            n=n, temperature=temperature, top_p=1.0, top_k=-1, max_tokens=limit,
            stop_token_ids=sorted(stops), seed=int(torch.randint(0, 2**31 - 1, ())),
        )  # fmt: skip
        request = LoRARequest(f"round-{self.round}", self.round, str(adapter))
        outputs = self.llm.generate(
            [{"prompt_token_ids": p} for p in prompts], params, lora_request=request, use_tqdm=False
        )
        shutil.rmtree(adapter, ignore_errors=True)
        return [list(choice.token_ids) for out in outputs for choice in out.outputs]


LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The adapter ranks vLLM's LoRA kernels are built for (max_lora_rank must be one)."""


def vllm_engine(base: str, lora_rank: int, memory: float, dtype: str) -> Any:
    """A vLLM engine on this rank's GPU (the one training uses) for adapters up to `lora_rank`."""
    from vllm import LLM

    rank = next((r for r in LORA_RANKS if r >= lora_rank), None)
    if rank is None:
        raise UsageError(f"use_vllm: vLLM serves LoRA ranks up to 512, got lora_rank={lora_rank}")
    return LLM(
        model=base, enable_lora=True, max_lora_rank=rank, gpu_memory_utilization=memory,
        dtype=dtype, enable_prefix_caching=True,
    )  # fmt: skip


def completion_tensor(rows: list[list[int]], pad: int, device: Any) -> Any:
    """Sampled answers as one right-padded (rows, longest) tensor."""
    import torch

    longest = max((len(r) for r in rows), default=0) or 1
    return torch.tensor([r + [pad] * (longest - len(r)) for r in rows], device=device)
