"""The one Trainer subclass every stage and method runs through.

What it adds to transformers' Trainer, and why:
- checkpoints land as `OUTPUT_DIR/checkpoints/step-N`, written under a staging folder, given a
  manifest (`danlu_manifest.json`, written last by rank 0) and renamed when complete (Trainer
  writes `checkpoint-N` in place, so a crash mid-save leaves a folder that looks resumable but
  is not); a save that fails for lack of space (or any storage error) removes the staged
  folder and ends in one line (`RuntimeFailure`) saying which earlier checkpoint is intact;
- a resume from a checkpoint of the last step trains nothing (Trainer would run one more
  step whenever max_steps does not end an epoch), so `final/` equals the uninterrupted run's;
- token counting per micro-batch (all non-pad tokens, and trained tokens) for tokens/s, MFU
  and `trained_tokens` in metrics.jsonl;
- the method's per-step hook (AdaLoRA's rank allocation) after each optimiser step;
- loss.png redrawn at each save;
- tokens/s summed over ranks (tokens_per_s is the job's, tokens_per_s_per_device one device's);
- FSDP2 checkpoints by parameter name (`Fsdp2Checkpoints`), and a barrier before a sharded
  (ZeRO/FSDP) checkpoint is published, so no rank is still writing into it.
Loss normalisation over accumulated micro-batches (sum of token losses / trained tokens of the
whole optimiser step) is transformers' own `num_items_in_batch` path; a test checks it.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from danlu.train.checkpoint import (
    checkpoints_dir,
    rotate,
    save_failure,
    staging_dir,
    write_manifest,
)
from danlu.train.fsdp_trainer import Fsdp2Checkpoints
from danlu.train.metrics import MetricsFile, ThroughputMeter, memory_gib, plot_loss
from danlu.utils.dist import all_reduce_sum, barrier
from danlu.utils.errors import RuntimeFailure
from danlu.utils.fs import publish, storage_failure

StepHook = Callable[[Any, int], None]


def build_trainer(
    *,
    run_dir: Path,
    meter: ThroughputMeter,
    keep: int | None,
    on_step: StepHook | None = None,
    is_adapter: bool = False,
    hybrid_shard: bool = False,
    stage_loss: type | None = None,
    stage_setup: tuple = (),
    **trainer_kwargs: Any,
) -> Any:
    """A `DanluTrainer` (created lazily so importing danlu.train stays light); `stage_loss` is
    the stage's loss mixin (train/stages.py), set up with `stage_setup`."""
    cls = _trainer_class(stage_loss)
    trainer = cls(**trainer_kwargs)
    if stage_loss is not None:
        trainer.stage_setup(*stage_setup)
    trainer.danlu_setup(run_dir, meter, keep)
    trainer.fsdp2_setup(is_adapter, hybrid_shard)
    if on_step is not None:
        trainer.add_callback(_step_hook_callback(on_step))
    return trainer


@functools.cache
def _trainer_class(stage_loss: type | None = None) -> type:
    from transformers import Trainer

    bases = (stage_loss,) if stage_loss is not None else ()

    class DanluTrainer(*bases, Fsdp2Checkpoints, Trainer):  # type: ignore[misc]
        def danlu_setup(self, run_dir: Path, meter: ThroughputMeter, keep: int | None) -> None:
            self.run_dir, self.meter, self.keep = Path(run_dir), meter, keep
            self.metrics = MetricsFile(self.run_dir / "metrics.jsonl")

        def training_step(self, model: Any, inputs: dict, num_items_in_batch: Any = None) -> Any:
            self.meter.add(*count_tokens(inputs))
            return super().training_step(model, inputs, num_items_in_batch)

        def _get_output_dir(self, trial: Any) -> str:
            # Trainer writes `checkpoint-N` here; we publish it as checkpoints/step-N when done.
            return str(staging_dir(self.run_dir))

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            step = self.state.global_step
            staged = staging_dir(self.run_dir) / f"checkpoint-{step}"
            try:
                self._write_checkpoint(model, trial, staged, step)
            except BaseException as exc:
                reason = storage_failure(exc, staged)  # before the removal frees the space
                part = _newest_file(staged)
                if self.args.should_save:  # rank 0 owns the folder; other ranks may still write
                    shutil.rmtree(staged, ignore_errors=True)
                if reason is None:
                    raise
                raise RuntimeFailure(save_failure(self.run_dir, step, reason, part)) from exc
            if self.args.should_save:
                rotate(self.run_dir, self.keep)
                self._plot_loss(step)

        def _plot_loss(self, step: int) -> None:
            png = self.run_dir / "loss.png"
            try:
                plot_loss(self.metrics.read(), png)
            except Exception as exc:  # the disk filled just after the checkpoint did
                reason = storage_failure(exc, self.run_dir)
                if reason is None:
                    raise
                raise RuntimeFailure(
                    f"writing {png} failed: {reason}; checkpoint step-{step} was saved whole; "
                    "after fixing this, rerun with resume_from_checkpoint: auto"
                ) from exc

        def _write_checkpoint(self, model: Any, trial: Any, staged: Path, step: int) -> None:
            """Trainer's files, then (rank 0, once every rank wrote its part) the manifest, last,
            then the rename that publishes checkpoints/step-N."""
            super()._save_checkpoint(model, trial)
            barrier()  # ZeRO/FSDP: every rank has written its part before rank 0 publishes
            if not self.args.should_save:
                return
            write_manifest(staged)
            publish(staged, checkpoints_dir(self.run_dir) / f"step-{step}")

        def _init_training_state(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
            # Whatever Trainer passes is forwarded: only the resumed state is read here.
            epochs_trained, skip = super()._init_training_state(*args, **kwargs)
            if 0 < self.state.max_steps <= self.state.global_step:
                # A checkpoint of the last step (a kill while final/ was written): nothing is
                # left to train. Trainer tests `global_step >= max_steps` only after a step, and
                # unless max_steps ends an epoch it re-enters that epoch: one step too many.
                return int(self.state.num_train_epochs), 0
            return epochs_trained, skip

        def train(self, *args: Any, **kwargs: Any) -> Any:
            self.meter.restart()
            if kwargs.get("resume_from_checkpoint"):  # keep the count cumulative across resumes
                done = [r["trained_tokens"] for r in self.metrics.read() if "trained_tokens" in r]
                # the job's total so far, carried by rank 0 alone (counts are summed over ranks)
                main = self.args.process_index == 0
                self.meter.trained_tokens = done[-1] if done and main else 0
            return super().train(*args, **kwargs)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:  # before super().log: the progress bar and TensorBoard show them too
                logs.update(self._live())
                if hasattr(self, "stage_metrics"):  # rm/dpo: rewards/*, logps/*
                    logs.update(self.stage_metrics())
            super().log(logs, start_time)
            if self.args.should_save and ("loss" in logs or "eval_loss" in logs):
                self.metrics.write(self._record(logs))

        def _live(self) -> dict[str, float]:
            """The job's numbers: every rank logs, so summing over ranks here is collective."""
            r = self.meter.window()
            world = max(self.args.world_size, 1)
            mine = [r["tokens_per_s"], r["trained_tokens_per_s"], r["tflops"], r["mfu"] or 0.0]
            tokens, trained, tflops, mfu, total = all_reduce_sum([*mine, self.meter.trained_tokens])
            live = {
                "tokens_per_s": round(tokens, 2),
                "tokens_per_s_per_device": round(tokens / world, 2),
                "trained_tokens_per_s": round(trained, 2),
                "tflops": round(tflops / world, 4),  # per device, as MFU
                "mfu": None if r["mfu"] is None else round(mfu / world, 4),
                "trained_tokens": int(total),
                "mem": memory_gib(self.args.device.type),
            }
            return {k: v for k, v in live.items() if v is not None}  # TensorBoard: numbers only

        def _record(self, logs: dict[str, float]) -> dict[str, Any]:
            record: dict[str, Any] = {
                "step": self.state.global_step,
                "epoch": round(self.state.epoch or 0.0, 4),
            }
            if "learning_rate" in logs:
                record["lr"] = logs["learning_rate"]
            skip = {"learning_rate", "epoch", "total_flos"}
            record.update({k: v for k, v in logs.items() if k not in skip})
            return record

    return DanluTrainer


def _newest_file(folder: Path) -> str:
    """The file a failed save was writing: the last one touched in its staging folder."""
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    if not files:
        return "the checkpoint"
    return str(max(files, key=lambda p: p.stat().st_mtime_ns).relative_to(folder))


def count_tokens(inputs: dict) -> tuple[int, int]:
    """(input tokens excluding padding, trained tokens) of one micro-batch.

    Trained tokens are counted after the causal shift (labels[..., 1:]), the same tokens the
    loss is averaged over.
    """
    mask = inputs.get("attention_mask")
    ids = inputs.get("input_ids")
    if ids is None:  # grpo's prompts: its loss counts the generated sequences itself
        return 0, 0
    # A 4D block-diagonal mask (packing) cannot be summed for a token count: use position ids.
    tokens = int(mask.sum()) if mask is not None and mask.dim() == 2 else int(ids.numel())
    labels = inputs.get("labels")
    trained = int((labels[..., 1:] != -100).sum()) if labels is not None else 0
    return tokens, trained


def _step_hook_callback(hook: StepHook) -> Any:
    from transformers import TrainerCallback

    class _StepHook(TrainerCallback):
        def on_optimizer_step(
            self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
        ) -> None:
            hook(model, state.global_step)

    return _StepHook()
