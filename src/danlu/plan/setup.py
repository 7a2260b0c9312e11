"""What is being estimated: the run's method, precision, batch and parallel layout."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

# Bytes per element. int8/int4 are bitsandbytes LLM.int8() and NF4: the per-row fp32 scale
# (int8) and the double-quantised 64-element block constants (NF4: 8-bit absmax per block
# + fp32 per 256 blocks, ~0.127 bit/param, QLoRA paper §2) are added to the payload.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "int8": 1.0,
    "int4": 0.5 + 0.127 / 8,
}
# Optimizer state bytes per trainable parameter: AdamW keeps m and v in fp32 (8); bitsandbytes'
# 8-bit AdamW keeps them in int8 with block scales (2 + 2*4/2048 ~ 2); SGD with momentum one
# buffer; plain SGD none.
OPTIMIZER_BYTES: dict[str, float] = {
    "adamw": 8.0,
    "adamw_8bit": 2.0 + 8 / 2048,
    "sgd_momentum": 4.0,
    "sgd": 0.0,
}
METHODS = (
    "full",
    "freeze",
    "lora",
    "qlora",
    "prefix",
    "ptuning_v2",
    "prompt",
    "ptuning",
    "ia3",
    "adalora",
)
CUDA_CONTEXT = 1.3e9
"""The seeds' CUDA context + kernels figure (~1.3 GB); newer CUDA with lazy loading needs less."""

Offload = Literal["none", "cpu", "nvme"]


@dataclass(frozen=True)
class Setup:
    """One training or inference configuration, per device. Defaults: LoRA r=8, bf16 on CUDA."""

    stage: Literal["train", "infer"] = "train"
    method: str = "lora"
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = ("all-linear",)
    pre_seq_len: int = 128
    prefix_projection: bool = False
    freeze_layers: int = 2
    weights: str = "bf16"
    """Dtype the (frozen or trained) weights are held in: fp32 | bf16 | fp16 | int8 | int4."""
    compute: str | None = None
    """Activation dtype; None = the weight dtype, or bf16 for int8/int4 weights."""
    optimizer: str = "adamw"
    master_weights: bool | None = None
    """fp32 master copy of 16-bit trained weights (mixed precision); None = yes when 16-bit."""
    grad_dtype: str | None = None
    """Gradient dtype; None = the dtype of the trained parameters."""
    micro_batch: int = 1
    seq_len: int = 1024
    grad_ckpt: bool = False
    accumulation: int = 1
    attention: Literal["sdpa", "eager"] = "sdpa"
    zero: int = 0
    dp: int = 1
    """Data-parallel size: the world ZeRO partitions over."""
    tp: int = 1
    pp: int = 1
    offload_optimizer: Offload = "none"
    offload_params: Offload = "none"
    device: Literal["cuda", "cpu"] = "cuda"
    autocast: bool | None = None
    """Mixed-precision autocast (HF Trainer bf16/fp16); None = on for cuda, off for cpu."""
    overhead: float | None = None
    """Framework bytes outside tensors; None = CUDA_CONTEXT on cuda, 0 on cpu."""
    reference_copy: bool = False
    """A frozen copy of the model as the preference reference (dpo/kto/grpo with full/freeze)."""
    generates: bool = False
    """grpo: each step first samples micro_batch answers of seq_len tokens (a KV cache)."""

    def with_(self, **changes: object) -> Setup:
        return replace(self, **changes)

    @property
    def compute_dtype(self) -> str:
        if self.compute:
            return self.compute
        return "bf16" if self.weights in ("int8", "int4") else self.weights

    @property
    def adapter(self) -> bool:
        """Methods that train new small parameters on a frozen base."""
        return self.method not in ("full", "freeze")

    @property
    def base_weights(self) -> str:
        return (
            "int4"
            if self.method == "qlora" and self.weights not in ("int8", "int4")
            else self.weights
        )

    @property
    def trained_dtype(self) -> str:
        """Adapters are kept in fp32 (PEFT's default under mixed precision); full/freeze train
        the weights in their own dtype."""
        return "fp32" if self.adapter else self.weights

    @property
    def uses_master(self) -> bool:
        if self.master_weights is not None:
            return self.master_weights
        return self.trained_dtype in ("bf16", "fp16")

    @property
    def optimizer_bytes(self) -> float:
        """Per trained parameter. torch's AdamW keeps m and v in the parameter's dtype, so pure
        16-bit training (no master copy) has 2 + 2 bytes of state, not 8."""
        full = OPTIMIZER_BYTES[self.optimizer]
        if (
            self.trained_dtype in ("bf16", "fp16")
            and not self.uses_master
            and self.optimizer != "adamw_8bit"
        ):
            return full / 2
        return full

    @property
    def gradient_dtype(self) -> str:
        return self.grad_dtype or self.trained_dtype

    @property
    def uses_autocast(self) -> bool:
        return self.device == "cuda" if self.autocast is None else self.autocast

    @property
    def framework_overhead(self) -> float:
        if self.overhead is not None:
            return self.overhead
        return CUDA_CONTEXT if self.device == "cuda" else 0.0
