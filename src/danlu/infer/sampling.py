"""Choosing the next token for every row of a batch, each row with its own parameters.

A batch mixes greedy and sampled rows, different temperatures, top-p/top-k and seeds. Every row
owns a `torch.Generator`, so a seeded request draws the same numbers whatever else shares its
batch (seeded requests need no batch of their own). Penalties follow transformers' definitions
(repetition: divide positive logits, multiply negative ones, over prompt + output) and OpenAI's
(presence/frequency: subtract, over the output). Logprobs are those of the model's own
distribution, before any of this processing (as vLLM reports them by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from danlu.infer.params import GenParams


@dataclass
class RowState:
    """What sampling needs to remember about one sequence."""

    params: GenParams
    prompt: list[int]
    generator: Any = None
    output: list[int] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)

    def record(self, token: int) -> None:
        self.output.append(token)
        self.counts[token] = self.counts.get(token, 0) + 1


@dataclass
class TokenLogprob:
    token: int
    logprob: float
    top: list[tuple[int, float]]
    """The k most likely tokens with their logprobs, most likely first."""


def make_generator(seed: int | None, device: Any) -> Any:
    """A generator for one sequence: seeded when asked, else from fresh OS entropy."""
    import torch

    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed % (2**64))
    return gen


def choose(logits: Any, rows: list[RowState]) -> tuple[list[int], list[TokenLogprob | None]]:
    """Next token of each row from `logits` (B, V), and its logprob entry where one is asked for."""
    import torch

    logits = logits.float()
    want = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
    raw = torch.log_softmax(logits[want], dim=-1) if want else None
    _penalise(logits, rows)
    tokens = logits.argmax(dim=-1)
    sampled = [i for i, r in enumerate(rows) if r.params.sampling]
    if sampled:
        picks = _sample(logits[sampled], [rows[i] for i in sampled])
        tokens[sampled] = picks
    chosen = tokens.tolist()
    entries: list[TokenLogprob | None] = [None] * len(rows)
    for j, i in enumerate(want):
        entries[i] = logprob_entry(raw[j], chosen[i], rows[i].params.logprobs or 0)
    return chosen, entries


def logprob_entry(logprobs: Any, token: int, k: int) -> TokenLogprob:
    """The chosen token's logprob and the top `k` alternatives from one row of log-softmax."""
    top: list[tuple[int, float]] = []
    if k > 0:
        values, ids = logprobs.topk(k)
        top = list(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token, float(logprobs[token]), top)


def _penalise(logits: Any, rows: list[RowState]) -> None:
    import torch

    for i, row in enumerate(rows):
        p = row.params
        if not p.penalised:
            continue
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(row.prompt) | row.counts.keys()), device=logits.device)
            vals = logits[i, seen]
            vals = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
            logits[i, seen] = vals
        if row.counts and (p.presence_penalty or p.frequency_penalty):
            ids = torch.tensor(list(row.counts), device=logits.device)
            counts = torch.tensor(
                list(row.counts.values()), device=logits.device, dtype=logits.dtype
            )
            logits[i, ids] -= p.presence_penalty + p.frequency_penalty * counts


def _sample(logits: Any, rows: list[RowState]) -> Any:
    """One draw per row from its temperature/top-k/top-p/min-p filtered distribution."""
    import torch

    temps = torch.tensor([r.params.temperature for r in rows], device=logits.device)
    logits = logits / temps.unsqueeze(1)
    if any(r.params.top_k > 0 or r.params.top_p < 1.0 or r.params.min_p > 0 for r in rows):
        logits = _filter(logits, rows)
    probs = torch.softmax(logits, dim=-1)
    picks = [torch.multinomial(probs[j], 1, generator=row.generator) for j, row in enumerate(rows)]
    return torch.cat(picks)


def _filter(logits: Any, rows: list[RowState]) -> Any:
    """Mask tokens outside each row's top-k, top-p nucleus and min-p floor (keeps >= 1 token)."""
    import torch

    vocab = logits.shape[-1]
    ks = torch.tensor([r.params.top_k if r.params.top_k > 0 else vocab for r in rows])
    ps = torch.tensor([r.params.top_p for r in rows], device=logits.device)
    mins = torch.tensor([r.params.min_p for r in rows], device=logits.device)
    ordered, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=logits.device).unsqueeze(0)
    drop = rank >= ks.to(logits.device).unsqueeze(1)
    probs = torch.softmax(ordered.masked_fill(drop, float("-inf")), dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass strictly before this token
    drop |= before >= ps.unsqueeze(1)
    drop |= probs < mins.unsqueeze(1) * probs[:, :1]
    drop[:, 0] = False
    masked = ordered.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, masked)
