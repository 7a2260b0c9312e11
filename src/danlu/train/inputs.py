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
