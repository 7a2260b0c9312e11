"""Stage grpo (Shao et al. 2024, DeepSeekMath): for each prompt the policy samples
`num_generations` answers, the reward functions score them, and each answer's advantage is its
reward standardised within its group; the policy follows the advantages, held near its
reference by a KL term (weight `pref_beta`; 0 = no reference).

    A_i   = (R_i - mean(R_group)) / (std(R_group) + 1e-4)
    loss  = mean over answers of mean over answer tokens of
            -(exp(logp - sg(logp)) * A_i - beta * KL_t),  KL_t = exp(ref - logp) - (ref - logp) - 1

One optimisation step per generation round (TRL's default, num_iterations = 1), so the ratio is
1 in value and its gradient is the policy gradient; KL_t is the k3 estimator. Generation runs
through transformers' `generate` on the training model itself (the LoRA adapter active), in
eval mode, with the chat template's end-of-turn token as a stop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from danlu.train.stage_base import StageMetrics


@dataclass(frozen=True)
class GrpoParams:
    num_generations: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    beta: float = 0.04
    weights: tuple[float, ...] = ()


def group_advantages(rewards: Any, group: int) -> tuple[Any, Any]:
    """(advantages, per-group std) of the (N*group,) rewards, row i*group + g."""
    grouped = rewards.view(-1, group)
    std = grouped.std(dim=1, unbiased=False) if group > 1 else grouped.new_zeros(grouped.shape[0])
    adv = (grouped - grouped.mean(dim=1, keepdim=True)) / (std.unsqueeze(1) + 1e-4)
    return adv.reshape(-1), std


def token_logps(logits: Any, ids: Any, start: int) -> Any:
    """log p(ids[:, t]) for t >= start, from logits predicting position t at t - 1 (float32);
    `logits` may hold only the last len - start + 1 positions (logits_to_keep)."""
    from danlu.models.logps import target_logps

    scores = logits[:, logits.shape[1] - (ids.shape[1] - start) - 1 : -1, :]
    return target_logps(scores, ids[:, start:])


def completion_logps(model: Any, probe: Any, batch: dict, start: int) -> tuple[Any, Any]:
    """(per-token log-probs of the answers, the output), projecting only the positions that
    predict answer tokens where the model takes an int `logits_to_keep` (`probe`: unwrapped)."""
    from danlu.models.logps import supports_logits_to_keep

    ids = batch["input_ids"]
    keep = {"logits_to_keep": ids.shape[1] - start + 1} if supports_logits_to_keep(probe) else {}
    out = model(**batch, use_cache=False, **keep)
    return token_logps(out.logits, ids, start), out


def grpo_token_loss(logps: Any, ref: Any | None, adv: Any, mask: Any, beta: float) -> tuple:
    """The mean loss over answers (each the mean over its tokens) and the mean KL per token."""
    import torch

    per_token = -torch.exp(logps - logps.detach()) * adv.unsqueeze(1)
    kl = None
    if ref is not None and beta > 0:
        delta = ref - logps
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
    counts = mask.sum(1).clamp(min=1)
    loss = ((per_token * mask).sum(1) / counts).mean()
    mean_kl = None if kl is None else float(((kl * mask).sum() / mask.sum().clamp(min=1)).detach())
    return loss, mean_kl


def completion_mask(completions: Any, stops: frozenset[int]) -> Any:
    """1 up to and including the first stop token of each row, 0 after it."""
    import torch

    is_stop = torch.zeros_like(completions, dtype=torch.bool)
    for token in stops:
        is_stop |= completions == token
    after = (is_stop.cumsum(1) - is_stop.long()) > 0  # past the first stop
    return (~after).long()


class GrpoLoss(StageMetrics):
    def stage_setup(
        self, params: GrpoParams, reference: str, ref_model: Any, rewards: list, stops: frozenset,
        sampler: Any = None,
    ) -> None:  # fmt: skip
        self.grpo, self.reference, self.ref_model = params, reference, ref_model
        self.rewards, self.stops, self.sampler = rewards, stops, sampler
        self.metric_keys = (
            "reward", "reward_std", "completion_len", "clipped_ratio",
            *(f"rewards/{r.name}" for r in rewards), *(("kl",) if params.beta > 0 else ()),
        )  # fmt: skip
        self.model_accepts_loss_kwargs = False  # a mean over this micro-batch's answers
        self._stage_init()

    def compute_loss(
        self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        import torch

        g = self.grpo.num_generations
        prompt_mask = inputs["prompt_mask"].repeat_interleave(g, 0)
        seqs = self._generate(model, inputs["prompt_ids"], inputs["prompt_mask"])
        start = inputs["prompt_ids"].shape[1]
        cmask = completion_mask(seqs[:, start:], self.stops)
        scores, metrics = self._score(inputs, seqs[:, start:], cmask)
        adv, std = group_advantages(scores, g)
        attention = torch.cat([prompt_mask, cmask], dim=1)
        batch = {
            "input_ids": seqs,
            "attention_mask": attention,
            "position_ids": _positions(attention),
        }
        self.meter.add(int(attention.sum()) - int(inputs["prompt_mask"].sum()), int(cmask.sum()))
        policy = self.accelerator.unwrap_model(model)
        logps, outputs = completion_logps(model, policy, batch, start)
        ref = self._reference(model, batch, start) if self.grpo.beta > 0 else None
        loss, kl = grpo_token_loss(logps, ref, adv, cmask.to(logps.dtype), self.grpo.beta)
        metrics.update(reward_std=float(std.mean()), kl=kl)
        self._stage_record(metrics, model.training)
        return (loss, outputs) if return_outputs else loss

    def _reference(self, model: Any, batch: dict, start: int) -> Any:
        with self.as_reference(model) as (call, probe):
            return completion_logps(call, probe, batch, start)[0]

    def _generate(self, model: Any, prompt_ids: Any, prompt_mask: Any) -> Any:
        """prompt + answer rows, answer j of prompt i at row i * num_generations + j."""
        import torch

        policy = self.accelerator.unwrap_model(model)
        if self.sampler is not None:  # vLLM (use_vllm): the prompts without their padding
            from danlu.train.grpo_vllm import completion_tensor

            g = self.grpo.num_generations
            rows = self.sampler.sample(policy, unpadded(prompt_ids, prompt_mask), g, self.grpo.max_completion_length,
                                       self.grpo.temperature, self.stops)  # fmt: skip
            pad = self.processing_class.pad_token_id
            answers = completion_tensor(rows, pad, prompt_ids.device)
            return torch.cat([prompt_ids.repeat_interleave(g, 0), answers], dim=1)
        was_training = policy.training
        policy.eval()  # no dropout while sampling
        try:
            with torch.no_grad():
                return policy.generate(
                    input_ids=prompt_ids,
                    attention_mask=prompt_mask,
                    do_sample=True,
                    temperature=self.grpo.temperature,
                    top_p=1.0,
                    top_k=0,
                    max_new_tokens=self.grpo.max_completion_length,
                    num_return_sequences=self.grpo.num_generations,
                    eos_token_id=sorted(self.stops) or None,
                    pad_token_id=self.processing_class.pad_token_id,
                    use_cache=True,
                )
        finally:
            policy.train(was_training)

    def _score(self, inputs: dict, completions: Any, cmask: Any) -> tuple[Any, dict]:
        """The weighted reward of every answer and the metrics of this round."""
        import torch

        g = self.grpo.num_generations
        lengths = cmask.sum(1).tolist()
        ids = [row[:n] for row, n in zip(completions.tolist(), lengths, strict=True)]
        texts = self.processing_class.batch_decode(ids, skip_special_tokens=True)
        prompt_ids = unpadded(inputs["prompt_ids"], inputs["prompt_mask"])
        columns = _columns(inputs["columns"], g)
        columns.update(
            completion_ids=ids,
            completion_lengths=lengths,
            prompt_ids=[p for p in prompt_ids for _ in range(g)],
        )
        prompts = [json.loads(p) for p in inputs["prompt"] for _ in range(g)]
        table = torch.tensor(
            [r(prompts, texts, **columns) for r in self.rewards], dtype=torch.float32
        )  # (functions, answers)
        weights = torch.tensor(self.grpo.weights or [1.0] * len(self.rewards)).unsqueeze(1)
        total = torch.nansum(table * weights, dim=0)
        metrics: dict[str, Any] = {
            f"rewards/{r.name}": _nanmean(row) for r, row in zip(self.rewards, table, strict=True)
        }
        limit = self.grpo.max_completion_length
        metrics.update(
            reward=float(total.mean()),
            completion_len=sum(lengths) / len(lengths),
            clipped_ratio=sum(n >= limit and ids_[-1] not in self.stops for n, ids_ in zip(lengths, ids, strict=True)) / len(lengths),
        )  # fmt: skip
        return total.to(completions.device), metrics


def unpadded(ids: Any, mask: Any) -> list[list[int]]:
    """Each row's tokens without its (left) padding."""
    return [[t for t, m in zip(row, keep, strict=True) if m]
            for row, keep in zip(ids.tolist(), mask.tolist(), strict=True)]  # fmt: skip


def _columns(rows: list[str], g: int) -> dict[str, list]:
    """Each record's other columns as keyword lists, one value per answer (absent: None)."""
    decoded = [json.loads(r) for r in rows]
    keys = sorted({k for d in decoded for k in d})
    return {k: [d.get(k) for d in decoded for _ in range(g)] for k in keys}


def _nanmean(row: Any) -> float | None:
    import torch

    kept = row[~torch.isnan(row)]
    return float(kept.mean()) if kept.numel() else None


def _positions(attention: Any) -> Any:
    """Positions counted from each row's first real token (prompts are left-padded), as
    `generate` counts them."""
    return (attention.cumsum(1) - 1).clamp(min=0)
