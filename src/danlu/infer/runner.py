"""The model side of the engine: batched, left-padded prefill and decode steps over a KV cache.

One code path serves a plain model and every PEFT adapter type. LoRA/IA3/AdaLoRA change weights
and need nothing here. Prompt-learning adapters change the input: prefix tuning / P-Tuning v2
puts trained key/values in front of every layer's cache (`get_prompt` gives them as a cache),
prompt tuning / P-Tuning puts trained embeddings in front of the input. Both add `P` virtual
columns that the attention mask shows as real; positions come from the mask's cumulative sum, so
a left-padded row gets exactly the positions it would get alone. That is what makes batched
output equal single output (peft's own `generate` drops position ids for prompt tuning, so its
left-padded batches drift; single prompts match ours exactly).

Rows live in one cache, left-aligned by padding. Continuous batching needs two operations on it:
`select` (drop finished or cancelled rows, then trim columns no row uses) and `merge` (join a
newly prefilled group, padding the shorter cache on the left). Both are exact for caches made of
plain `DynamicLayer`s; for anything else (sliding windows, remote-code tuple caches) `can_join` is
False and the scheduler only starts new groups when the running one has finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from danlu.infer.sampling import TokenLogprob, logprob_entry
from danlu.models.compat import cache_keyword

PREFILL_TOKENS = 8192
"""Tokens per prefill chunk across the batch: bounds activation memory for long prompts."""
ECHO_LOGIT_TOKENS = 512
"""Positions per chunk when every prompt position's logits are needed (echo + logprobs)."""


@dataclass
class Batch:
    cache: Any
    mask: Any
    """(B, T) attention mask over the cache columns (virtual + padding + tokens)."""
    next_pos: Any
    """(B,) position id of the next token fed to each row."""
    last: Any = None
    """(B,) the token each row feeds at the next decode step."""

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])


class ModelRunner:
    """Runs the model for the scheduler; knows adapters, padding, positions and cache surgery."""

    backend = "native"

    def __init__(self, model: Any, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.kind, self.virtual = _adapter_kind(model)
        self.core = model.get_base_model() if self.kind != "none" else model
        self.device = _input_device(model)
        self.config = self.core.config
        self.cache_key = cache_keyword(self.core)
        self.can_join: bool | None = None

    # -- prefill ---------------------------------------------------------------------------

    def prefill(
        self, prompts: list[list[int]], echo_k: list[int | None]
    ) -> tuple[Batch, Any, list[list[TokenLogprob | None]]]:
        """Run the prompts; returns the batch, the last position's logits (B, V), and for rows
        with `echo_k[i]` not None the logprob of every prompt token (None for the first)."""
        import torch

        ids, pad_mask = self._pad(prompts)
        rows, width = ids.shape
        ones = torch.ones(rows, self.virtual, dtype=pad_mask.dtype, device=self.device)
        mask = torch.cat([ones, pad_mask], dim=1)
        pos = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)
        cache = self._initial_cache(rows)
        echo = [i for i, k in enumerate(echo_k) if k is not None]
        step = max(16, (ECHO_LOGIT_TOKENS if echo else PREFILL_TOKENS) // rows)
        prompt_lp: list[list[TokenLogprob | None]] = [[] for _ in prompts]
        last = None
        for start in range(0, width, step):
            end = min(start + step, width)
            logits = self._prefill_chunk(ids, mask, pos, cache, start, end, full=bool(echo))
            if echo:
                self._collect_echo(logits, ids, pad_mask, echo, echo_k, start, end, prompt_lp)
            last = logits[:, -1, :]
        self._note_cache(cache)
        batch = Batch(cache=cache, mask=mask, next_pos=mask.sum(1))
        return batch, last, prompt_lp

    def _pad(self, prompts: list[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _initial_cache(self, rows: int) -> Any:
        from transformers import DynamicCache

        if self.kind == "prefix":
            return self.model.get_prompt(batch_size=rows)
        return DynamicCache(config=self.config)

    def _prefill_chunk(
        self, ids: Any, mask: Any, pos: Any, cache: Any, start: int, end: int, full: bool
    ) -> Any:
        import torch

        v = self.virtual
        cols = slice(v + start, v + end)
        kwargs: dict[str, Any] = {
            "attention_mask": mask[:, : v + end],
            self.cache_key: cache,
            "use_cache": True,
            "logits_to_keep": 0 if full else 1,
        }
        chunk = ids[:, start:end]
        if self.kind == "prompt" and start == 0:
            embeds = self.model.word_embeddings(chunk)
            virtual = self.model.get_prompt(batch_size=chunk.shape[0]).to(embeds.dtype)
            kwargs["inputs_embeds"] = torch.cat([virtual, embeds], dim=1)
            kwargs["position_ids"] = pos[:, : v + end]
        else:
            kwargs["input_ids"] = chunk
            kwargs["position_ids"] = pos[:, cols]
        logits = self._forward(**kwargs).logits
        if self.kind == "prompt" and start == 0 and full:
            logits = logits[:, v:, :]
        return logits

    def _collect_echo(
        self,
        logits: Any,
        ids: Any,
        pad_mask: Any,
        rows: list[int],
        ks: list[int | None],
        start: int,
        end: int,
        out: list[list[TokenLogprob | None]],
    ) -> None:
        """Logprob of each prompt token given the ones before it, chunk by chunk (bounded memory)."""
        import torch

        width = ids.shape[1]
        for i in rows:
            if start == 0:
                out[i].append(None)  # the first prompt token has no context to score it
            pad = int(width - pad_mask[i].sum())
            lo = max(start, pad)
            hi = min(end, width - 1)  # the last column predicts the first generated token
            if hi <= lo:
                continue
            lp = torch.log_softmax(logits[i, lo - start : hi - start].float(), dim=-1)
            targets = ids[i, lo + 1 : hi + 1].tolist()
            for j, tok in enumerate(targets):
                out[i].append(logprob_entry(lp[j], tok, ks[i] or 0))

    # -- decode ----------------------------------------------------------------------------

    def decode(self, batch: Batch) -> Any:
        """One step for every row: feed `batch.last`, return next-token logits (B, V)."""
        import torch

        ones = torch.ones(batch.size, 1, dtype=batch.mask.dtype, device=batch.mask.device)
        batch.mask = torch.cat([batch.mask, ones], dim=1)
        out = self._forward(
            input_ids=batch.last.unsqueeze(1),
            attention_mask=batch.mask,
            position_ids=batch.next_pos.unsqueeze(1),
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_key: batch.cache},
        )
        batch.next_pos = batch.next_pos + 1
        return out.logits[:, -1, :]

    def _forward(self, **kwargs: Any) -> Any:
        # Prompt-learning inputs are built above, so the bare model runs; LoRA-style adapters go
        # through PeftModel.forward, which enables any forward hooks the adapter type needs.
        model = self.core if self.kind != "none" else self.model
        return model(**kwargs)

    # -- cache surgery ---------------------------------------------------------------------

    def _note_cache(self, cache: Any) -> None:
        if self.can_join is None:
            from transformers.cache_utils import Cache, DynamicLayer

            if not isinstance(cache, Cache):
                raise RuntimeError(
                    f"{type(self.core).__name__} keeps its KV cache as {type(cache).__name__}, "
                    "not a transformers Cache (old remote code); the serving engine needs the "
                    "Cache API"
                )

            layers = getattr(cache, "layers", None)
            self.can_join = bool(layers) and all(type(x) is DynamicLayer for x in layers)

    def release(self, batch: Batch) -> None:
        """The scheduler is done with every row of `batch` (its cache goes with the object)."""

    def reset(self) -> None:
        """Nothing is running any more (after a failure)."""

    def close(self) -> None:
        """The engine is closing (the model is freed with the object)."""

    def select(self, batch: Batch, keep: list[int]) -> Batch:
        """Keep only rows `keep`, then drop leading columns that no remaining row attends to."""
        import torch

        idx = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
        batch.cache.batch_select_indices(idx)
        batch.mask, batch.next_pos = batch.mask[idx], batch.next_pos[idx]
        if batch.last is not None:
            batch.last = batch.last[idx]
        if self.can_join:
            first = int(batch.mask.any(dim=0).int().argmax())
            if first > 0:
                for layer in batch.cache.layers:
                    layer.keys = layer.keys[..., first:, :]
                    layer.values = layer.values[..., first:, :]
                batch.mask = batch.mask[:, first:]
        return batch

    def merge(self, a: Batch, b: Batch) -> Batch:
        """Join batch `b` after `a`'s rows; the shorter cache is padded on the left (masked)."""
        import torch
        import torch.nn.functional as F

        width = max(a.mask.shape[1], b.mask.shape[1])

        def grow(t: Any, dim_from_end: int) -> Any:
            missing = width - t.shape[-dim_from_end]
            if missing == 0:
                return t
            pad = [0, 0] * (dim_from_end - 1) + [missing, 0]
            return F.pad(t, pad)

        for la, lb in zip(a.cache.layers, b.cache.layers, strict=True):
            la.keys = torch.cat([grow(la.keys, 2), grow(lb.keys, 2)], dim=0)
            la.values = torch.cat([grow(la.values, 2), grow(lb.values, 2)], dim=0)
        a.mask = torch.cat([grow(a.mask, 1), grow(b.mask, 1)], dim=0)
        a.next_pos = torch.cat([a.next_pos, b.next_pos])
        a.last = torch.cat([a.last, b.last])
        return a


def _adapter_kind(model: Any) -> tuple[str, int]:
    """('none' | 'prefix' | 'prompt', virtual token count) of a model or PeftModel."""
    config = getattr(model, "active_peft_config", None)
    if config is None or not getattr(config, "is_prompt_learning", False):
        return "none", 0
    from peft import PeftType

    kind = "prefix" if config.peft_type == PeftType.PREFIX_TUNING else "prompt"
    if config.peft_type not in (
        PeftType.PREFIX_TUNING,
        PeftType.PROMPT_TUNING,
        PeftType.P_TUNING,
    ):
        raise NotImplementedError(f"serving {config.peft_type} adapters is not supported")
    return kind, int(config.num_virtual_tokens)


def _input_device(model: Any) -> Any:
    """Where inputs go: the embedding's device (the first shard under device_map)."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device
