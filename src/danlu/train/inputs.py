"""Everything a training run reads or writes, checked before any heavy work (and before a
launcher starts ranks): a bad path, file or setting is one line in a second, and nothing has
been written into `output_dir` yet, so fixing the input and running the same command works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from danlu.data.files import resolve_files
from danlu.data.readers import is_local
from danlu.models.load import checked_model
from danlu.models.vocab import read_new_tokens
from danlu.train.dsconfig import read_deepspeed
from danlu.train.launch import read_hostfile
from danlu.utils.paths import check_writable_dir


def check_inputs(cfg: Any) -> None:
    """Raise the one-line error of the first input that cannot work (UsageError, or
    RuntimeFailure for a place that cannot be written)."""
    check_writable_dir(Path(cfg.output_dir), "output_dir")
    for source in cfg.data:
        if is_local(source.path):
            resolve_files(source.path)
    read_new_tokens(cfg.new_tokens, cfg.new_tokens_file)
    if cfg.deepspeed:
        read_deepspeed(cfg.deepspeed)
    if cfg.hostfile:
        read_hostfile(cfg.hostfile)
    checked_model(cfg.section("model"))
    if cfg.stage == "grpo":
        _check_rewards(cfg)


def _check_rewards(cfg: Any) -> None:
    """grpo: every reward function imports (user files run now, in a second, not at step 1),
    and every `rm:PATH` is a model danlu can load as a reward model."""
    from danlu.train.grpo_setup import reward_model_args
    from danlu.train.rewards import load_rewards

    load_rewards(cfg.reward_funcs, cfg.max_completion_length)
    if cfg.use_vllm:
        from danlu.train.grpo_vllm import check_vllm

        check_vllm(cfg.method)
    for spec in cfg.reward_funcs:
        if spec.startswith("rm:"):
            checked_model(reward_model_args(cfg, spec[3:]))
