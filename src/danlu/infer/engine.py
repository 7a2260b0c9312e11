"""`Engine`: a loaded model + tokenizer + chat template behind a batching scheduler.

The chat CLI, the OpenAI server, the web page (through the server), the benchmark and the demo
all generate through this one class, so they share batching, streaming, stop strings, seeds and
validation. It loads through `danlu.models.load_model`, so an adapter of any type danlu trains,
dtype, device, device_map and quantisation work as they do for training.
"""

from __future__ import annotations

import functools
import os
import queue
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from danlu.config import ModelArgs
from danlu.data.templates import eos_ids
from danlu.infer.params import GenParams, ParamError
from danlu.infer.requests import Output, Request, Sequence, Sink
from danlu.infer.sampling import TokenLogprob
from danlu.utils.errors import UsageError


@dataclass(frozen=True)
class EngineConfig:
    max_batch_size: int = 16
    """Rows (choices) decoded together; more requests wait in the queue."""
    batch_wait_ms: float = 5.0
    """When idle, how long the first request waits for others to share its prefill."""
    max_model_len: int | None = None
    """Context length to enforce; default: the model's `max_position_embeddings` (llamacpp:
    at most 4096, since its KV cache is allocated up front for every row)."""
    backend: str = "native"
    """`native` (transformers + any adapter, exactly as trained) or `llamacpp` (a GGUF)."""


@dataclass
class Completion:
    """The whole of one choice (what non-streaming callers get)."""

    index: int
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None

    def add(self, out: Output) -> None:
        self.text += out.text
        self.tokens += out.tokens
        self.logprobs += out.logprobs
        if out.prompt_logprobs is not None:
            self.prompt_logprobs = out.prompt_logprobs
        if out.finish_reason is not None:
            self.finish_reason = out.finish_reason


class PromptTooLong(ParamError):
    """The prompt (plus the tokens asked for) does not fit the model's context."""


class Engine:
    """Generation for many concurrent callers. Thread-safe; `close()` stops the scheduler."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "model",
        chat_template: str | None = None,
        config: EngineConfig | None = None,
        runner: Any = None,
    ) -> None:
        """`runner` replaces the transformers runner (the llamacpp backend passes its own, and
        `model` None)."""
        from danlu.infer.runner import ModelRunner
        from danlu.infer.scheduler import Scheduler

        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.config = config or EngineConfig()
        self.chat_template = chat_template or _tokenizer_template(tokenizer)
        self.runner = runner or ModelRunner(model, _pad_id(tokenizer))
        self.context_len = (
            self.config.max_model_len
            or getattr(self.runner, "context_len", None)
            or _context_len(model)
        )
        self.eos = eos_ids(tokenizer, getattr(model, "generation_config", None))
        self.vocab_size = len(tokenizer)
        self.scheduler = Scheduler(
            self.runner,
            max_batch=self.config.max_batch_size,
            wait_ms=self.config.batch_wait_ms,
            context_len=self.context_len,
            beam=self._beam_search,
        )

    @classmethod
    def load(
        cls,
        args: ModelArgs,
        *,
        name: str | None = None,
        template: str = "auto",
        config: EngineConfig | None = None,
    ) -> Engine:
        """Load `args.model` (+ `args.adapter`) and start the scheduler."""
        from danlu.models import load_model

        if config is not None and config.backend == "llamacpp":
            from danlu.infer.llamacpp import load_engine

            return load_engine(cls, args, name=name, template=template, config=config)
        if config is not None and config.backend != "native":
            raise UsageError(f"--backend {config.backend}: unknown (native, llamacpp)")
        loaded = load_model(args, for_training=False)
        source = chat_template_for(loaded.tokenizer, template, args)
        return cls(
            loaded.model,
            loaded.tokenizer,
            name=name or default_name(args),
            chat_template=source,
            config=config,
        )

    # -- prompts ---------------------------------------------------------------------------

    def chat_prompt(self, messages: list[dict[str, Any]], tools: Any = None) -> list[int]:
        """Token ids of `messages` rendered with the chat template, ready for the reply."""
        return self.tokenizer.encode(self.chat_text(messages, tools), add_special_tokens=False)

    def chat_text(self, messages: list[dict[str, Any]], tools: Any = None) -> str:
        """`messages` (and `tools`, JSON-schema function definitions) rendered with the chat
        template and its generation prompt."""
        if not self.chat_template:
            raise UsageError(
                "this model's tokenizer has no chat template; pass --template (e.g. chatml) "
                "or use the completions API"
            )
        return self.tokenizer.apply_chat_template(
            messages, tools=tools, chat_template=self.chat_template, tokenize=False,
            add_generation_prompt=True,
        )  # fmt: skip

    @functools.cached_property
    def chat_eos(self) -> frozenset[int]:
        """The token that closes an assistant turn in the chat template (e.g. <|im_end|>,
        <|eot_id|>), which ends a chat reply even when it is not the model's EOS."""
        from danlu.data.templates import Template

        if not self.chat_template:
            return frozenset()
        closer = Template("chat", self.chat_template).closer_id(self.tokenizer)
        return frozenset() if closer is None else frozenset({closer})

    def encode(self, text: str) -> list[int]:
        """A plain-text prompt as the model saw text in pretraining (with its BOS, if any)."""
        return self.tokenizer.encode(text, add_special_tokens=True)

    def check(self, prompts: list[list[int]], params: GenParams) -> None:
        """Raise ParamError unless every prompt is valid and fits with `max_new_tokens`."""
        virtual = self.runner.virtual
        if params.num_beams > 1 and self.model is None:
            raise ParamError(
                "num_beams", f"beam search is not available with the {self.runner.backend} backend"
            )
        if (
            params.num_beams > 1
            and self.runner.kind == "prefix"
            and self.runner.cache_key == "cache"
        ):
            # Beam search runs through peft's generate, which puts the prefix in
            # `past_key_values`; transformers >= 5.24 reads `cache` and ignores it.
            raise ParamError(
                "num_beams",
                "beam search is not available for a prefix-tuning adapter with this "
                "transformers release (peft's generate would ignore the prefix); use num_beams=1",
            )
        for p in prompts:
            if not p:
                raise ParamError("prompt", "prompt is empty")
            bad = next((t for t in p if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise ParamError(
                    "prompt", f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
            need = len(p) + virtual + params.max_new_tokens
            if need > self.context_len:
                raise PromptTooLong(
                    "messages",
                    f"This model's maximum context length is {self.context_len} tokens. However, "
                    f"you requested {need} tokens ({len(p) + virtual} in the messages, "
                    f"{params.max_new_tokens} in the completion). Please reduce the length of the "
                    "messages or completion.",
                )

    def room(self, prompt: list[int]) -> int:
        """Tokens that still fit after `prompt` in the context."""
        return self.context_len - len(prompt) - self.runner.virtual

    # -- generation ------------------------------------------------------------------------

    def submit(
        self,
        prompts: list[list[int]],
        params: GenParams,
        sink: Sink,
        *,
        n: int = 1,
        echo: bool = False,
        extra_eos: frozenset[int] = frozenset(),
    ) -> Request:
        """Queue a request; `sink(Output)` is called from the scheduler thread for each event."""
        self.check(prompts, params)
        if n < 1:
            raise ParamError("n", f"n must be at least 1, got {n}")
        eos = frozenset() if params.ignore_eos else self.eos | extra_eos
        request = Request(prompts, params, sink, n=n, echo=echo, eos=eos)
        device = self.runner.device
        seqs = [
            Sequence(request, i, self.tokenizer, device, params.max_new_tokens)
            for i in range(request.choices)
        ]
        self.scheduler.add(seqs)
        return request

    def stream(self, prompt: list[int], params: GenParams, **kw: Any) -> Iterator[Output]:
        """Events of one prompt's choices as they come; closing the iterator cancels the request."""
        events: queue.Queue[Output] = queue.Queue()
        request = self.submit([prompt], params, events.put, **kw)
        left = request.choices
        try:
            while left:
                out = events.get()
                left -= out.finish_reason is not None
                yield out
        finally:
            request.cancel()

    def generate(self, prompts: list[list[int]], params: GenParams, **kw: Any) -> list[Completion]:
        """Blocking: every choice of every prompt, in choice order."""
        events: queue.Queue[Output] = queue.Queue()
        request = self.submit(prompts, params, events.put, **kw)
        done = [Completion(i) for i in range(request.choices)]
        left = request.choices
        try:
            while left:
                out = events.get()
                done[out.index].add(out)
                left -= out.finish_reason is not None
        finally:
            request.cancel()
        return done

    def chat(self, messages: list[dict[str, Any]], params: GenParams) -> Completion:
        return self.generate([self.chat_prompt(messages)], params, extra_eos=self.chat_eos)[0]

    def close(self) -> None:
        self.scheduler.close()
        self.runner.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- beam search (runs alone, through transformers/peft generate) ------------------------

    def _beam_search(self, seq: Sequence) -> list[int]:
        import torch

        p = seq.request.params
        ids = torch.tensor([seq.prompt], device=self.runner.device)
        out = self.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            num_beams=p.num_beams,
            do_sample=False,
            max_new_tokens=seq.max_new,
            repetition_penalty=p.repetition_penalty,
            eos_token_id=sorted(seq.request.eos) or None,
            pad_token_id=_pad_id(self.tokenizer),
            early_stopping=True,
        )
        return out[0, ids.shape[1] :].tolist()


def default_name(args: ModelArgs) -> str:
    """The model id clients see: the adapter's run name, else the model's name."""
    if args.adapter:
        path = Path(args.adapter).expanduser().resolve()
        return path.parent.name if path.name == "final" else path.name
    spec = args.model.rstrip("/")
    return Path(spec).name if os.sep in spec or Path(spec).exists() else spec


def chat_template_for(tokenizer: Any, template: str, args: ModelArgs) -> str | None:
    """The Jinja template to chat with: `template` if given, else the one the run trained with
    (its config.yaml beside `final/`), else the tokenizer's own."""
    from danlu.data.templates import get_template

    spec = template if template != "auto" else _run_template(args)
    if spec == "auto":
        return _tokenizer_template(tokenizer)
    return get_template(spec, tokenizer).source


def _run_template(args: ModelArgs) -> str:
    import yaml

    for folder in (args.adapter, args.model):
        if not folder:
            continue
        config = Path(folder).expanduser() / ".." / "config.yaml"
        if config.is_file():
            try:
                value = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("template")
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            if isinstance(value, str) and value:
                return value
    return "auto"


def _tokenizer_template(tokenizer: Any) -> str | None:
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, dict):
        source = source.get("default")
    return source or None


def _pad_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(tokenizer.eos_token_id or 0)


def _context_len(model: Any) -> int:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048
