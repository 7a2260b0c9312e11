"""What a user's log shows: danlu's own lines and real warnings, not our dependencies talking
to each other about renames the user cannot act on.

Every filter here names the library call that triggers it; danlu's own code uses the current
names (models/compat.py), and a test runs a training and a chat with warnings visible and
fails on any line that is not danlu's.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LIBRARY_DEPRECATIONS = (
    # peft reads `model.is_gradient_checkpointing`, renamed in transformers 5.24.
    r"`is_gradient_checkpointing` is deprecated",
    # peft's prefix tuning passes `past_key_values=` to the base model (`cache` since 5.24).
    r"`past_key_values` is deprecated and will be removed",
    # DeepSpeed's ZeRO gathers with the collective torch 2.13 renamed to all_gather_single.
    r"`torch.distributed.all_gather_into_tensor` is deprecated",
)

QUIET_LOGGERS = (
    # bitsandbytes, imported by peft whenever it is installed, says at import (on AVX512-BF16
    # CPUs) that it could not fetch a kernel from the hub: danlu never downloads at run time,
    # and only 4-bit CPU runs would use that kernel (they work without it).
    "bitsandbytes.backends.cpu.ops",
)


def quiet_libraries() -> None:
    """Call once at start-up, before torch/transformers/peft are imported."""
    for pattern in LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if not sys.stderr.isatty():  # DESIGN §1: no progress bars in a log file
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers, the hub
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # datasets (packing)
