"""Stage kto (Ethayarajh et al. 2024): unpaired answers labelled good or bad, each pushed away
from a KL baseline z0 of the policy against its reference.

    r(x, y) = log pi(y|x) - log ref(y|x)        (summed over the answer tokens)
    z0      = max(0, mean over mismatched (x, y') of r(x, y')), detached, averaged over ranks
    good:  lambda_D * (1 - sigmoid(beta * (r - z0)))
    bad:   lambda_U * (1 - sigmoid(beta * (z0 - r)))

The loss is the mean over the batch's answers (TRL's and LLaMA-Factory's choice). The batches
come from data.collate.KtoCollator: B records, then B mismatched rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from danlu.train.stage_base import StageMetrics
from danlu.utils.dist import all_reduce_sum


@dataclass(frozen=True)
class KtoParams:
    beta: float = 0.1
    good_weight: float = 1.0
    bad_weight: float = 1.0


def kto_loss(
    ratios: Any, labels: Any, z0: Any, p: KtoParams
) -> tuple[Any, dict[str, float | None]]:
    """Per-answer losses and the batch's metrics; `ratios` r(x, y), `labels` True = good."""
    import torch

    good = torch.sigmoid(p.beta * (ratios - z0))
    bad = torch.sigmoid(p.beta * (z0 - ratios))
    losses = torch.where(labels, p.good_weight * (1 - good), p.bad_weight * (1 - bad))
    rewards = p.beta * ratios.detach()
    return losses, {
        "rewards/chosen": _mean(rewards[labels]),
        "rewards/rejected": _mean(rewards[~labels]),
        "kl": float(z0),
    }


def _mean(values: Any) -> float | None:
    return float(values.mean()) if values.numel() else None


def _split(inputs: dict, n: int) -> tuple[dict, dict]:
    return {k: v[:n] for k, v in inputs.items()}, {k: v[n:] for k, v in inputs.items()}


def kl_baseline(mismatched: Any) -> Any:
    """z0: the mean mismatched log-ratio over every rank's batch, clamped at 0, no gradient."""
    total, count = all_reduce_sum([float(mismatched.detach().sum()), float(mismatched.numel())])
    return mismatched.new_tensor(max(total / max(count, 1.0), 0.0))


class KtoLoss(StageMetrics):
    metric_keys = ("rewards/chosen", "rewards/rejected", "kl", "logps/chosen", "logps/rejected")

    def stage_setup(self, params: KtoParams, reference: str, ref_model: Any = None) -> None:
        self.kto, self.reference, self.ref_model = params, reference, ref_model
        self.model_accepts_loss_kwargs = False  # a mean over this micro-batch's answers
        self._stage_init()

    def compute_loss(
        self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        import torch

        labels, tags = inputs.pop("labels"), inputs.pop("kto_label").bool()
        n = tags.shape[0]
        rows, mismatched = _split(inputs, n)
        logps, _, outputs = self.policy_logps(model, rows, labels[:n])
        with torch.no_grad():  # the baseline takes no gradient: no graph for those rows
            kl_logps, _, _ = self.policy_logps(model, mismatched, labels[n:])
        ref = self.reference_logps(model, inputs, labels)
        ratios = torch.cat([logps.detach(), kl_logps]) - ref
        z0 = kl_baseline(ratios[n:])
        losses, metrics = kto_loss(logps - ref[:n], tags, z0, self.kto)
        metrics["logps/chosen"] = _mean(logps[tags].detach())
        metrics["logps/rejected"] = _mean(logps[~tags].detach())
        self._stage_record(metrics, model.training)
        loss = losses.mean()
        return (loss, outputs) if return_outputs else loss
