"""The preference losses of stage dpo (sigmoid, ipo, hinge, orpo, simpo) and stage rm, as pure
functions of per-sequence log-probabilities or rewards, and the metrics they report.

Written here rather than taken from TRL's DPOTrainer: that trainer tokenises the data itself
(from prompt/chosen/rejected text), while danlu's pairs arrive tokenised with its own templates
and answer-only masks, and its trainer must keep danlu's run layout, checkpoints and metrics.
The formulas follow the papers (and agree with TRL's and LLaMA-Factory's implementations):
- sigmoid (DPO, Rafailov et al. 2023): -log sigmoid(beta * ((pc - rc) - (pr - rr)))
- ipo (Azar et al. 2023): ((pc - rc) - (pr - rr) - 1 / (2 beta))^2, on length-averaged log-probs
- hinge (SLiC, Zhao et al. 2023): relu(1 - beta * ((pc - rc) - (pr - rr)))
- orpo (Hong et al. 2024): NLL(chosen) - beta * log sigmoid(log odds(chosen) - log odds(rejected)),
  odds from length-averaged log-probs; no reference
- simpo (Meng et al. 2024): -log sigmoid(beta * (avg pc - avg pr) - gamma); no reference
with p = the policy's and r = the reference's summed log-probability of the answer tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from danlu.config.stages import REFERENCE_FREE
from danlu.models.logps import answer_logps

__all__ = ["REFERENCE_FREE", "answer_logps", "dpo_loss", "reward_loss"]

LENGTH_AVERAGED = ("ipo", "orpo", "simpo")


@dataclass(frozen=True)
class PrefParams:
    loss: str = "sigmoid"
    beta: float = 0.1
    ftx: float = 0.0
    gamma: float = 0.5


def dpo_loss(
    policy: tuple[Any, Any], counts: tuple[Any, Any], ref: tuple[Any, Any] | None, p: PrefParams
) -> tuple[Any, dict[str, Any]]:
    """The per-pair losses and the metrics of one batch.

    `policy` and `ref` are (chosen, rejected) summed log-probs, `counts` their answer lengths;
    `ref` is None for the reference-free losses.
    """
    import torch.nn.functional as F

    pc, pr = policy
    nc, nr = (c.clamp(min=1) for c in counts)
    if p.loss in LENGTH_AVERAGED:
        pc_used, pr_used = pc / nc, pr / nr
    else:
        pc_used, pr_used = pc, pr
    if p.loss in REFERENCE_FREE:
        rc_used = rr_used = pc.new_zeros(())
    else:
        rc, rr = ref
        rc_used, rr_used = (rc / nc, rr / nr) if p.loss in LENGTH_AVERAGED else (rc, rr)
    margin = (pc_used - rc_used) - (pr_used - rr_used)
    if p.loss == "sigmoid":
        losses = -F.logsigmoid(p.beta * margin)
    elif p.loss == "ipo":
        losses = (margin - 1 / (2 * p.beta)) ** 2
    elif p.loss == "hinge":
        losses = F.relu(1 - p.beta * margin)
    elif p.loss == "orpo":
        log_odds = (pc_used - pr_used) - (_log1mexp(pc_used) - _log1mexp(pr_used))
        losses = -pc_used - p.beta * F.logsigmoid(log_odds)
    elif p.loss == "simpo":
        losses = -F.logsigmoid(p.beta * (pc_used - pr_used) - p.gamma)
    else:
        raise ValueError(f"unknown preference loss {p.loss!r}")
    if p.ftx > 0 and p.loss != "orpo":  # orpo's loss already holds the chosen NLL
        losses = losses + p.ftx * (-pc / nc)
    chosen = p.beta * (pc_used - rc_used).detach()
    rejected = p.beta * (pr_used - rr_used).detach()
    return losses, _metrics(chosen, rejected, pc, pr)


def _log1mexp(x: Any) -> Any:
    """log(1 - exp(x)) for x < 0, stable near 0 (x is an average log-probability)."""
    import torch

    x = x.clamp(max=-1e-6)
    return torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def reward_loss(chosen: Any, rejected: Any) -> tuple[Any, dict[str, Any]]:
    """Bradley-Terry: -log sigmoid(r_chosen - r_rejected), per pair; and the metrics."""
    import torch.nn.functional as F

    losses = -F.logsigmoid(chosen - rejected)
    return losses, _metrics(chosen.detach(), rejected.detach())


def _metrics(chosen: Any, rejected: Any, pc: Any = None, pr: Any = None) -> dict[str, Any]:
    out = {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/accuracy": (chosen > rejected).float().mean(),
        "rewards/margin": (chosen - rejected).mean(),
    }
    if pc is not None:
        out["logps/chosen"] = pc.detach().mean()
        out["logps/rejected"] = pr.detach().mean()
    return out
