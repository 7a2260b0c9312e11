"""What the stage loss mixins share: their metrics window and the reference model's forward."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from danlu.utils.dist import all_reduce_sum


class StageMetrics:
    """Means of a stage's per-batch metrics over a logging window, across ranks. A metric a
    batch has no value for (None: kto's rewards/chosen in a batch of bad answers only) is
    left out of its mean rather than counted as zero."""

    def _stage_init(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def _stage_record(self, metrics: dict[str, Any], training: bool) -> None:
        if not training:
            return
        for key, value in metrics.items():
            if value is None:
                continue
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._counts[key] = self._counts.get(key, 0) + 1

    def stage_metrics(self) -> dict[str, float]:
        """Called by every rank at each logging step (collective: every rank must pass the same
        keys, hence the stage's full list `self.metric_keys`); resets the window."""
        keys = tuple(sorted(getattr(self, "metric_keys", None) or self._sums))
        sums = all_reduce_sum([self._sums.get(k, 0.0) for k in keys])
        counts = all_reduce_sum([float(self._counts.get(k, 0)) for k in keys])
        self._stage_init()
        return {k: round(v / n, 4) for k, v, n in zip(keys, sums, counts, strict=True) if n}

    def policy_logps(
        self, model: Any, inputs: dict, labels: Any, paired: bool = False
    ) -> tuple[Any, Any, Any]:
        """The trained model's summed answer log-probs, counts and output (with gradient);
        `paired`: rows i and B+i share a prompt, computed once (models/shared_prefix.py)."""
        from danlu.models.logps import answer_logps_of
        from danlu.models.shared_prefix import pair_logps_of

        scorer = pair_logps_of if paired else answer_logps_of
        return scorer(model, inputs, labels, self.accelerator.unwrap_model(model))

    @contextlib.contextmanager
    def as_reference(self, model: Any) -> Iterator[tuple[Any, Any]]:
        """(the module to call, the unwrapped one to inspect) that compute the reference,
        without gradient: the frozen copy, or the model itself with its adapter disabled (no
        second copy in memory)."""
        import torch

        unwrapped = self.accelerator.unwrap_model(model)
        with torch.no_grad():
            if self.reference == "copy":
                yield self.ref_model, self.ref_model
            else:
                with unwrapped.disable_adapter():
                    yield model, unwrapped

    def reference_logps(self, model: Any, inputs: dict, labels: Any) -> Any:
        """The reference's summed answer log-probs of a batch of pairs (dpo's chosen and
        rejected, kto's records and their mismatched rows: row i and row B+i share a prompt)."""
        from danlu.models.shared_prefix import pair_logps_of

        with self.as_reference(model) as (call, probe):
            return pair_logps_of(call, inputs, labels, probe)[0]
