"""Trainer hooks for a model danlu sharded with FSDP2 (see `fsdp.py`): a mixin, inert otherwise.

transformers' Trainer already knows a model that owns its sharding and gradient reduction (its
`is_distributed_loading_by_transformers` path: no DDP wrap, FSDP2 `no_sync`, DTensor-aware
clipping). What it cannot do for such a model is checkpoint and resume it; that is done here, by
parameter name, so the checkpoint does not depend on the number of processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from danlu.train import fsdp
from danlu.train.checkpoint import writer_of

SCHEDULER = "scheduler.pt"


class Fsdp2Checkpoints:
    """Mixed into DanluTrainer before Trainer; every hook falls through when not sharded."""

    fsdp2 = False
    is_adapter = False
    hybrid = False

    def fsdp2_setup(self, is_adapter: bool, hybrid: bool) -> None:
        self.fsdp2 = fsdp.is_sharded(self.model)
        self.is_adapter, self.hybrid = is_adapter, hybrid
        if self.fsdp2:  # after Trainer.__init__: its check refuses resumable saves for this path
            self.is_distributed_loading_by_transformers = True

    def _move_model_to_device(self, model: Any, device: Any) -> None:
        if not fsdp.is_sharded(model):  # FSDP2 placed its shards (or offloaded them) itself
            super()._move_model_to_device(model, device)

    @contextlib.contextmanager
    def _defer_fsdp_gradient_reduction(self) -> Iterator[None]:
        # Trainer's version reads a load-time config our models do not carry. With hybrid
        # sharding only the all-reduce across nodes waits; the in-node reduce-scatter keeps
        # gradients sharded.
        model = self.model
        setter = model.set_requires_all_reduce if self.hybrid else model.set_requires_gradient_sync
        setter(False)
        try:
            yield
        finally:
            setter(True)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not self.fsdp2:
            return super().save_model(output_dir, _internal_call)
        folder = Path(output_dir or self.args.output_dir)
        final = not _internal_call  # the result, in HF/PEFT format only; else a checkpoint
        whole = final and not self.is_adapter
        state = fsdp.gather_all(self.model) if whole else fsdp.gather_trainable(self.model)
        if not self.args.should_save:  # the gathers above are collectives: every rank joins
            return None
        folder.mkdir(parents=True, exist_ok=True)
        if self.is_adapter or whole:  # a checkpoint's adapter loads like any PEFT adapter too
            self.model.save_pretrained(str(folder), state_dict=state)
        if not final:
            fsdp.save_trainable(state, folder)
        self.processing_class.save_pretrained(str(folder))
        return None

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self.fsdp2:
            return super()._save_optimizer_and_scheduler(output_dir)
        import torch

        main = self.args.should_save
        fsdp.save_optimizer(self.model, self.optimizer, Path(output_dir), main)
        if main:
            torch.save(self.lr_scheduler.state_dict(), Path(output_dir) / SCHEDULER)
        return None

    def _by_name(self, checkpoint: str) -> bool:
        """Sharded now, or resuming a sharded run's checkpoint on one process."""
        return self.fsdp2 or writer_of(Path(checkpoint))[0] == "fsdp"

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        if not self._by_name(resume_from_checkpoint):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        fsdp.load_trainable(self.model, Path(resume_from_checkpoint), self.args.process_index == 0)
        return None

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not self._by_name(checkpoint):
            return super()._load_optimizer_and_scheduler(checkpoint)
        import torch

        folder = Path(checkpoint)
        fsdp.load_optimizer(self.model, self.optimizer, folder, self.args.process_index == 0)
        self.lr_scheduler.load_state_dict(torch.load(folder / SCHEDULER, weights_only=True))
        return None
