"""The stage registry (DESIGN §9): what each `stage:` trains, on which model head, with which
batches, loss and reference. One engine runs them all (train/engine.py); a stage only adds its
loss (a Trainer mixin overriding the public `compute_loss`) and its metrics.

- pt, sft: the causal LM loss over the trained tokens (Trainer's own);
- rm: a scalar reward head (AutoModelForSequenceClassification, num_labels=1) trained on
  pairs with the Bradley-Terry loss;
- dpo: the policy against a reference on pairs, with `pref_loss` sigmoid | ipo | hinge | orpo |
  simpo. The reference is the model with its adapter disabled (adapter methods: no second copy
  in memory), a frozen copy made before training (full/freeze), log-probabilities computed once
  before training (`precompute_ref_log_probs`), or none (orpo, simpo).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from danlu.models.shared_prefix import pair_logps_of
from danlu.train.grpo import GrpoLoss, GrpoParams
from danlu.train.kto import KtoLoss, KtoParams
from danlu.train.preference import REFERENCE_FREE, PrefParams, dpo_loss, reward_loss
from danlu.train.stage_base import StageMetrics
from danlu.utils.errors import UsageError


@dataclass(frozen=True)
class Stage:
    name: str
    head: str = "causal"
    """causal: a causal LM; score: a one-label sequence classifier (the reward model)."""
    batches: str = "plain"
    """plain: input_ids + labels; pairs: (chosen, rejected), chosen rows first; kto: labelled
    answers plus their mismatched rows; grpo: prompts."""
    loss: str | None = None
    """The mixin that computes the stage's loss (None: Trainer's own causal LM loss)."""


STAGES = {
    "pt": Stage("pt"),
    "sft": Stage("sft"),
    "rm": Stage("rm", head="score", batches="pairs", loss="reward"),
    "dpo": Stage("dpo", batches="pairs", loss="dpo"),
    "kto": Stage("kto", batches="kto", loss="kto"),
    "grpo": Stage("grpo", batches="grpo", loss="grpo"),
}
NOT_YET = {
    "ppo": (
        "stage ppo: TRL, which the RL stages follow, no longer has a PPO trainer (TRL 1.x); use "
        "stage: grpo with reward_funcs: [rm:PATH] (PATH: a stage rm result) for RL from a reward "
        "model, or stage: dpo on preference pairs"
    ),
}


def get_stage(name: str) -> Stage:
    if name in NOT_YET:
        raise UsageError(NOT_YET[name])
    if name not in STAGES:
        raise UsageError(f"stage '{name}' is unknown; known: {', '.join(STAGES)}")
    return STAGES[name]


def stage_setup(
    cfg: Any, reference: str, ref_model: Any, tokenizer: Any, generation_config: Any = None
) -> tuple:
    """What the stage's loss mixin is set up with (`stage_setup(*these)`)."""
    params = stage_params(cfg)
    if params is None:
        return ()
    if cfg.stage != "grpo":
        return (params, reference, ref_model)
    from danlu.train.grpo_setup import reward_model_scorer, stop_ids
    from danlu.train.rewards import load_rewards

    loader = lambda path: reward_model_scorer(cfg, path, tokenizer)  # noqa: E731
    rewards = load_rewards(cfg.reward_funcs, cfg.max_completion_length, loader)
    stops = stop_ids(cfg, tokenizer, generation_config)
    return (params, reference, ref_model, rewards, stops, _sampler(cfg))


def _sampler(cfg: Any) -> Any:
    """grpo with use_vllm: this rank's vLLM engine (None: transformers' generate)."""
    if not cfg.use_vllm:
        return None
    from danlu.models.load import checked_model
    from danlu.train.grpo_vllm import VllmSampler, check_vllm, vllm_engine

    check_vllm(cfg.method)
    dtype = "bfloat16" if cfg.bf16 else "float16" if cfg.fp16 else "auto"
    base = str(checked_model(cfg.section("model")))
    return VllmSampler(vllm_engine(base, cfg.lora_rank, cfg.vllm_gpu_memory_utilization, dtype))


def stage_params(cfg: Any) -> Any:
    """The stage loss's own parameters (None for stages without them)."""
    if cfg.stage == "grpo":
        weights = tuple(cfg.reward_weights or ())
        return GrpoParams(cfg.num_generations, cfg.max_completion_length, cfg.grpo_temperature,
                          cfg.pref_beta, weights)  # fmt: skip
    if cfg.stage == "dpo":
        return PrefParams(cfg.pref_loss, cfg.pref_beta, cfg.pref_ftx, cfg.simpo_gamma)
    if cfg.stage == "kto":
        return KtoParams(cfg.pref_beta, cfg.kto_chosen_weight, cfg.kto_rejected_weight)
    return None


def reference_kind(cfg: Any, is_adapter: bool) -> str:
    """How dpo / kto / grpo get their reference: none | precomputed | adapter_off | copy."""
    if cfg.stage not in ("dpo", "kto", "grpo"):
        return "none"
    if (cfg.stage == "dpo" and cfg.pref_loss in REFERENCE_FREE) or (
        cfg.stage == "grpo" and cfg.pref_beta == 0
    ):
        return "none"
    if cfg.precompute_ref_log_probs:
        return "precomputed"
    return "adapter_off" if is_adapter else "copy"


def frozen_copy(model: Any) -> Any:
    """The reference of a full/freeze dpo run: the model as loaded, frozen (twice the weights)."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


# --- the losses, as mixins on the one Trainer --------------------------------------------------


class DpoLoss(StageMetrics):
    def stage_setup(self, params: PrefParams, reference: str, ref_model: Any = None) -> None:
        self.pref, self.reference, self.ref_model = params, reference, ref_model
        # The loss is a mean over this micro-batch's pairs: Trainer must divide by accumulation.
        self.model_accepts_loss_kwargs = False
        self._stage_init()

    def compute_loss(
        self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        ref = (inputs.pop("ref_chosen_logps", None), inputs.pop("ref_rejected_logps", None))
        labels = inputs.pop("labels")
        logps, counts, outputs = self.policy_logps(model, inputs, labels, paired=True)
        half = logps.shape[0] // 2
        if self.reference in ("adapter_off", "copy"):
            ref = self._reference_logps(model, inputs, labels, half)
        losses, metrics = dpo_loss(
            (logps[:half], logps[half:]),
            (counts[:half], counts[half:]),
            None if self.reference == "none" else ref,
            self.pref,
        )
        self._stage_record(metrics, model.training)
        loss = losses.mean()
        return (loss, outputs) if return_outputs else loss

    def _reference_logps(self, model: Any, inputs: dict, labels: Any, half: int) -> tuple:
        logps = self.reference_logps(model, inputs, labels)
        return logps[:half], logps[half:]


class RewardLoss(StageMetrics):
    def stage_setup(self) -> None:
        self.model_accepts_loss_kwargs = False  # a mean over pairs, as DpoLoss
        self._stage_init()

    def compute_loss(
        self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        inputs.pop("labels")  # the reward head would read them as regression targets
        outputs = model(**inputs, use_cache=False)
        rewards = outputs.logits.squeeze(-1).float()
        half = rewards.shape[0] // 2
        losses, metrics = reward_loss(rewards[:half], rewards[half:])
        self._stage_record(metrics, model.training)
        loss = losses.mean()
        return (loss, outputs) if return_outputs else loss


MIXINS = {"dpo": DpoLoss, "reward": RewardLoss, "kto": KtoLoss, "grpo": GrpoLoss}


# --- reference log-probabilities computed once --------------------------------------------------


def precompute_reference(model: Any, dataset: Any, collator: Any, batch_size: int) -> Any:
    """`dataset` with `ref_chosen_logps` / `ref_rejected_logps` columns: the reference's
    log-probabilities (this model before training, its adapter disabled if it has one)."""
    import contextlib

    import torch

    disable = getattr(model, "disable_adapter", None)
    device = next(model.parameters()).device
    chosen: list[float] = []
    rejected: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), disable() if disable else contextlib.nullcontext():
            for start in range(0, len(dataset), batch_size):
                rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                batch = {k: v.to(device) for k, v in collator(rows).items()}
                labels = batch.pop("labels")
                logps, _, _ = pair_logps_of(model, batch, labels)
                half = logps.shape[0] // 2
                chosen += logps[:half].tolist()
                rejected += logps[half:].tolist()
    finally:
        model.train(was_training)
    return dataset.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)
