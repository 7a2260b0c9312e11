"""The one Trainer subclass every stage and method runs through.

What it adds to transformers' Trainer, and why:
- checkpoints land as `OUTPUT_DIR/checkpoints/step-N`, written under a staging folder and
  renamed when complete (Trainer writes `checkpoint-N` in place, so a crash mid-save leaves a
  folder that looks resumable but is not);
- token counting per micro-batch (all non-pad tokens, and trained tokens) for tokens/s, MFU
  and `trained_tokens` in metrics.jsonl;
- the method's per-step hook (AdaLoRA's rank allocation) after each optimiser step;
- loss.png redrawn at each save.
Loss normalisation over accumulated micro-batches (sum of token losses / trained tokens of the
whole optimiser step) is transformers' own `num_items_in_batch` path; a test checks it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from danlu.train.checkpoint import checkpoints_dir, rotate, staging_dir
from danlu.train.metrics import MetricsFile, ThroughputMeter, memory_gib, plot_loss
from danlu.utils.fs import publish

StepHook = Callable[[Any, int], None]


def build_trainer(
    *,
    run_dir: Path,
    meter: ThroughputMeter,
    keep: int | None,
    on_step: StepHook | None = None,
    **trainer_kwargs: Any,
) -> Any:
    """A `DanluTrainer` (created lazily so importing danlu.train stays light)."""
    cls = _trainer_class()
    trainer = cls(**trainer_kwargs)
    trainer.danlu_setup(run_dir, meter, keep)
    if on_step is not None:
        trainer.add_callback(_step_hook_callback(on_step))
    return trainer


def _trainer_class() -> type:
    from transformers import Trainer

    class DanluTrainer(Trainer):
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
            super()._save_checkpoint(model, trial)
            if not self.args.should_save:
                return
            step = self.state.global_step
            staged = staging_dir(self.run_dir) / f"checkpoint-{step}"
            publish(staged, checkpoints_dir(self.run_dir) / f"step-{step}")
            rotate(self.run_dir, self.keep)
            plot_loss(self.metrics.read(), self.run_dir / "loss.png")

        def train(self, *args: Any, **kwargs: Any) -> Any:
            self.meter.restart()
            if kwargs.get("resume_from_checkpoint"):  # keep the count cumulative across resumes
                done = [r["trained_tokens"] for r in self.metrics.read() if "trained_tokens" in r]
                self.meter.trained_tokens = done[-1] // max(self.args.world_size, 1) if done else 0
            return super().train(*args, **kwargs)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:  # before super().log: the progress bar and TensorBoard show them too
                logs.update(self._live())
            super().log(logs, start_time)
            if self.args.should_save and ("loss" in logs or "eval_loss" in logs):
                self.metrics.write(self._record(logs))

        def _live(self) -> dict[str, float]:
            rates = self.meter.window()
            world = max(self.args.world_size, 1)
            live = {
                "tokens_per_s": rates["tokens_per_s"] * world,
                "tokens_per_s_per_device": rates["tokens_per_s"],
                "trained_tokens_per_s": rates["trained_tokens_per_s"] * world,
                "tflops": rates["tflops"],
                "mfu": rates["mfu"],
                "trained_tokens": self.meter.trained_tokens * world,
                "mem": memory_gib(self.args.device.type),
            }
            return {
                k: v for k, v in live.items() if v is not None
            }  # TensorBoard takes numbers only

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


def count_tokens(inputs: dict) -> tuple[int, int]:
    """(input tokens excluding padding, trained tokens) of one micro-batch.

    Trained tokens are counted after the causal shift (labels[..., 1:]), the same tokens the
    loss is averaged over.
    """
    mask = inputs.get("attention_mask")
    ids = inputs["input_ids"]
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
