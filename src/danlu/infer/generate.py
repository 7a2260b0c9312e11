"""Streamed generation for one conversation, with the model's own chat template."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any


def stream_chat(
    model: Any,
    tokenizer: Any,
    messages: list[dict[str, str]],
    max_new_tokens: int = 128,
    **gen: Any,
) -> Iterator[str]:
    """Yield the reply to `messages` piece by piece as the model produces it.

    Generation runs in a worker thread feeding transformers' TextIteratorStreamer; greedy
    decoding unless `do_sample=True` is passed.
    """
    import torch
    from transformers import TextIteratorStreamer

    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    enc = {k: v.to(model.device) for k, v in enc.items()}
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "streamer": streamer,
        "pad_token_id": tokenizer.pad_token_id,
        **enc,
        **gen,
    }

    def run() -> None:
        with torch.inference_mode():
            model.generate(**kwargs)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
