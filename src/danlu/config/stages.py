"""Config section of the preference stages (rm, dpo, kto; DESIGN §9): keys flat and unique.

Names follow LLaMA-Factory's where it has them (`pref_beta`, `pref_ftx`, `pref_loss`,
`simpo_gamma`, `kto_*`), so its users' configs carry over.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from danlu.config import methods as _methods  # noqa: F401  (method sections come first in dumps)
from danlu.config.schema import section

PREF_LOSSES = ("sigmoid", "ipo", "hinge", "orpo", "simpo")
"""dpo's losses."""
REFERENCE_FREE = ("orpo", "simpo")
"""dpo losses that need no reference model."""


@section("preference")
class PreferenceArgs:
    pref_loss: Literal["sigmoid", "ipo", "hinge", "orpo", "simpo"] = "sigmoid"
    """stage dpo: sigmoid (DPO), ipo, hinge (SLiC), orpo (odds ratio, no reference) or simpo
    (length-normalised margin, no reference)."""
    pref_beta: float = 0.1
    """dpo/kto: strength of the preference against the reference (beta; for ipo the
    regularisation tau, for orpo the odds-ratio weight lambda, for simpo the reward scale)."""
    pref_ftx: float = 0.0
    """dpo: weight of an SFT (NLL) term on the chosen answers added to the preference loss."""
    simpo_gamma: float = 0.5
    """simpo: the target reward margin gamma."""
    precompute_ref_log_probs: bool = False
    """dpo/kto: compute the reference model's log-probabilities once before training and keep
    no reference in memory (for full/freeze, which otherwise hold a frozen copy)."""
    kto_tag: str = "kto_tag"
    """kto: the record column saying whether the answer is good (true) or bad (false)."""
    kto_chosen_weight: float = 1.0
    """kto: loss weight of desirable (good) answers (lambda_D)."""
    kto_rejected_weight: float = 1.0
    """kto: loss weight of undesirable (bad) answers (lambda_U)."""


REWARD_BUILTINS = ("accuracy", "format", "length")
"""grpo's built-in reward functions (train/rewards.py)."""


@section("grpo")
class GrpoArgs:
    num_generations: int = 4
    """grpo: answers sampled per prompt (the group whose rewards are standardised); each
    device's per_device_train_batch_size counts prompts, so a step holds batch x this answers."""
    max_completion_length: int = 256
    """grpo: most tokens generated per answer (the prompt is capped by cutoff_len)."""
    grpo_temperature: float = 1.0
    """grpo: sampling temperature of the generated answers."""
    reward_funcs: list[str] = field(default_factory=lambda: ["accuracy"])
    """grpo: reward functions, summed with reward_weights: `accuracy` (final answer, boxed or
    last number, against the `solution` column), `format` (`<think>...</think> answer`),
    `length` (shorter is better), `python:FILE.py:FUNCTION` or `python:MODULE:FUNCTION`
    (called f(prompts, completions, **columns) -> list of floats), or `rm:PATH` (a stage rm
    result)."""
    reward_weights: list[float] | None = None
    """grpo: one weight per reward function; unset = all 1."""
    use_vllm: bool = False
    """grpo: sample the answers with vLLM (a CUDA GPU with vllm installed; method lora or
    qlora): a vLLM engine per rank beside training, handed the current adapter each round."""
    vllm_gpu_memory_utilization: float = 0.3
    """use_vllm: the share of each GPU's memory vLLM may take (weights + KV cache); training
    keeps the rest."""
