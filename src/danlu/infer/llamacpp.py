"""`--backend llamacpp`: a GGUF served by llama.cpp, behind danlu's own scheduler and HTTP API.

llama-cpp-python's high-level `Llama` holds one sequence, so a server built on it answers one
request at a time. This runner talks to llama.cpp's C API (the ctypes bindings llama-cpp-python
ships) instead: every running row is a llama.cpp sequence id in one shared KV buffer, a prefill
is one `llama_decode` over all new prompts, and a decode step is one `llama_decode` of one token
per row. The scheduler, sampling, stop strings, streaming, echo logprobs and the HTTP contract are
the native engine's, unchanged: only the forward pass moves into llama.cpp.

Rows map onto the scheduler's batch operations like this: `select` frees the id of a row that
left (its cells stay for a later prompt with the same start, see `_claim`) and copies a row's
cells when one prompt's choices fork; `merge` is list concatenation.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danlu.infer.sampling import TokenLogprob, logprob_entry
from danlu.utils.errors import RuntimeFailure, UsageError

log = logging.getLogger("danlu.infer")

DEFAULT_CONTEXT = 4096
"""Context per row when neither --max-model-len nor a smaller training context says otherwise:
the KV cache is allocated up front for every row, so the model's full 32k-128k would not fit."""
PREFILL_TOKENS = 512
"""Tokens per llama_decode call during prefill (llama.cpp's n_batch)."""


@dataclass
class RowBatch:
    """The running rows as llama.cpp sequences."""

    seqs: list[int]
    next_pos: Any
    """(B,) position of the next token fed to each row (a CPU tensor, like the native batch)."""
    last: Any = None

    @property
    def size(self) -> int:
        return len(self.seqs)


def _lib() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise UsageError(
            "--backend llamacpp needs llama-cpp-python: pip install 'danlu[gguf]'"
        ) from None
    return llama_cpp


_LOG_CALLBACK: Any = None


def _route_logs(lib: Any) -> None:
    """llama.cpp prints hundreds of load lines to stderr; keep its errors, send the rest to debug."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    def forward(level: int, text: bytes, _user: Any) -> None:
        line = text.decode("utf-8", "replace").rstrip()
        if line:
            log.log(logging.WARNING if level == 4 else logging.DEBUG, "llama.cpp: %s", line)

    _LOG_CALLBACK = lib.llama_log_callback(forward)  # kept alive: C holds the pointer
    lib.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


class LlamaCppRunner:
    """The ModelRunner interface (prefill / decode / select / merge) over a llama.cpp context."""

    backend = "llamacpp"
    kind = "none"
    virtual = 0
    cache_key = "llama.cpp"
    can_join = True

    def __init__(
        self, path: Path, *, rows: int, context_len: int | None, threads: int, gpu_layers: int
    ) -> None:
        import torch

        lib = self.lib = _lib()
        _route_logs(lib)
        lib.llama_backend_init()
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers = gpu_layers
        self.model = lib.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise RuntimeFailure(f"model '{path}': llama.cpp could not load this GGUF")
        trained = int(lib.llama_model_n_ctx_train(self.model))
        self.context_len = context_len or min(trained, DEFAULT_CONTEXT)
        self.rows, self.cap = rows, max(PREFILL_TOKENS, rows)
        self.ctx = lib.llama_init_from_model(self.model, self._context_params(rows, threads))
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise RuntimeFailure(
                f"llama.cpp could not allocate {rows} rows x {self.context_len} tokens of KV "
                "cache; lower --max-batch-size or --max-model-len"
            )
        self.memory = lib.llama_get_memory(self.ctx)
        self.n_vocab = int(lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model)))
        self.free: list[int] = []
        self.fed: dict[int, list[int]] = {}
        """The tokens whose KV cells each sequence id holds (running or free)."""
        self.reset()
        self.reused = 0
        """Prompt tokens not prefilled because a free sequence already held them."""
        self.batch = lib.llama_batch_init(self.cap, 0, 1)
        self.device = torch.device("cpu")

    def _context_params(self, rows: int, threads: int) -> Any:
        p = self.lib.llama_context_default_params()
        # One KV buffer for all rows (kv_unified): measured here, 16 rows decode in 138 ms a
        # step with it and 164 ms with a stream per row; each row still sees only its own
        # cells, and check() keeps every row within context_len, so the rows always fit.
        p.n_seq_max, p.kv_unified = rows, True
        p.n_ctx = self.context_len * rows
        p.n_batch = p.n_ubatch = self.cap
        p.n_outputs_max = p.n_outputs_max_per_seq = 0  # echo needs every prompt position
        p.n_threads = p.n_threads_batch = threads
        p.no_perf = True
        return p

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.lib.llama_model_free(self.model)
            self.ctx = self.model = None

    # -- the C batch -----------------------------------------------------------------------

    def _run(self, items: list[tuple[int, int, int, bool]]) -> Any:
        """Decode (token, position, sequence, wants_logits) items; returns the logits of the
        items that want them, in order, as a (N, V) float tensor."""
        import numpy as np
        import torch

        b = self.batch
        for i, (token, pos, seq, out) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i] = token, pos, 1
            b.seq_id[i][0], b.logits[i] = seq, out
        b.n_tokens = len(items)
        rc = self.lib.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} (KV cache full or bad batch)")
        wanted = sum(1 for it in items if it[3])
        if not wanted:
            return None
        ptr = self.lib.llama_get_logits(self.ctx)
        return torch.from_numpy(np.ctypeslib.as_array(ptr, shape=(wanted, self.n_vocab)).copy())

    # -- the scheduler's operations ----------------------------------------------------------

    def prefill(
        self, prompts: list[list[int]], echo_k: list[int | None]
    ) -> tuple[RowBatch, Any, list[list[TokenLogprob | None]]]:
        import torch

        seqs, items = [], []
        for i, p in enumerate(prompts):
            seq, keep = self._claim(p, reuse=echo_k[i] is None)
            seqs.append(seq)
            items += [(p[j], j, seq, j == len(p) - 1 or echo_k[i] is not None)
                      for j in range(keep, len(p))]  # fmt: skip
            self.fed[seq] = list(p)
        rows: list[Any] = []
        for start in range(0, len(items), self.cap):
            out = self._run(items[start : start + self.cap])
            if out is not None:
                rows.extend(out)
        last, prompt_lp, at = [], [[] for _ in prompts], 0
        for i, p in enumerate(prompts):
            if echo_k[i] is not None:
                prompt_lp[i] = _echo(torch.stack(rows[at : at + len(p)]), p, echo_k[i] or 0)
                at += len(p)
            else:
                at += 1
            last.append(rows[at - 1])
        positions = torch.tensor([len(p) for p in prompts], dtype=torch.long)
        return RowBatch(seqs, positions), torch.stack(last), prompt_lp

    def _claim(self, prompt: list[int], reuse: bool) -> tuple[int, int]:
        """A free sequence for `prompt` and how many of its tokens are already in its KV cells.

        A finished row's cells stay until its id is reused, so a prompt that starts like an
        earlier one (a shared system prompt, a retried request, the next turn of a chat) takes
        that id and only its new tokens are prefilled. At least the last token is always run:
        its logits choose the first answer token. Echo needs every position's logits: no reuse.
        """
        best, keep = self.free[-1], 0
        if reuse:
            for seq in self.free:
                n = _common(self.fed.get(seq, ()), prompt)
                if n > keep:
                    best, keep = seq, n
            keep = min(keep, len(prompt) - 1)
        self.free.remove(best)
        self.lib.llama_memory_seq_rm(self.memory, best, keep, -1)
        self.reused += keep
        return best, keep

    def decode(self, batch: RowBatch) -> Any:
        tokens, positions = batch.last.tolist(), batch.next_pos.tolist()
        logits = self._run(
            [(t, p, s, True) for t, p, s in zip(tokens, positions, batch.seqs, strict=True)]
        )
        for t, s in zip(tokens, batch.seqs, strict=True):
            self.fed[s].append(t)
        batch.next_pos = batch.next_pos + 1
        return logits

    def select(self, batch: RowBatch, keep: list[int]) -> RowBatch:
        """Keep rows `keep` (a row listed twice forks: its KV stream is copied)."""
        import torch

        seqs, used = [], set()
        for k in keep:
            seq = batch.seqs[k]
            if seq in used:
                fork = self.free.pop()
                self.lib.llama_memory_seq_rm(self.memory, fork, -1, -1)
                self.lib.llama_memory_seq_cp(self.memory, seq, fork, -1, -1)
                self.fed[fork] = list(self.fed[seq])
                seq = fork
            used.add(seq)
            seqs.append(seq)
        for seq in set(batch.seqs) - used:
            self._free(seq)
        idx = torch.tensor(keep, dtype=torch.long)
        last = batch.last[idx] if batch.last is not None else None
        return RowBatch(seqs, batch.next_pos[idx], last)

    def release(self, batch: RowBatch) -> None:
        for seq in set(batch.seqs):
            self._free(seq)

    def reset(self) -> None:
        """Nothing runs (at start, after a failure): every cell is cleared, every id free."""
        self.lib.llama_memory_clear(self.memory, True)
        self.free = list(range(self.rows - 1, -1, -1))
        self.fed.clear()

    def _free(self, seq: int) -> None:
        # The cells stay (see _claim); every sequence holds at most context_len of them, and
        # the cache has room for rows x context_len, so kept cells never crowd out a new row.
        self.free.append(seq)

    def merge(self, a: RowBatch, b: RowBatch) -> RowBatch:
        import torch

        return RowBatch(
            a.seqs + b.seqs,
            torch.cat([a.next_pos, b.next_pos]),
            torch.cat([a.last, b.last]),
        )


def _common(a: Any, b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):  # the shorter one ends the prefix
        if x != y:
            break
        n += 1
    return n


def _echo(logits: Any, prompt: list[int], k: int) -> list[TokenLogprob | None]:
    """Logprob of each prompt token given the ones before it (None for the first)."""
    import torch

    lp = torch.log_softmax(logits[:-1].float(), dim=-1)
    return [None] + [logprob_entry(lp[j], tok, k) for j, tok in enumerate(prompt[1:])]


def gpu_layers(device: str) -> int:
    """All layers on the GPU when llama.cpp was built with one and the device allows it."""
    lib = _lib()
    if device == "cpu" or not lib.llama_supports_gpu_offload():
        return 0
    return 1 << 30


def gguf_file(spec: str) -> Path:
    """The GGUF a `--model` value names for this backend: an embedded name or a .gguf file."""
    from danlu.models import EMBEDDED, embedded_gguf

    if spec in EMBEDDED:
        return embedded_gguf(spec)
    path = Path(spec).expanduser()
    if path.suffix.lower() != ".gguf":
        raise UsageError(
            f"--backend llamacpp: model '{spec}' is not a .gguf file; make one with "
            f"`danlu export --model {spec} --format gguf --out DIR`, or use --backend native"
        )
    if not path.is_file():
        raise UsageError(f"model '{spec}': no such file")
    return path


def load_engine(cls: Any, args: Any, *, name: str | None, template: str, config: Any) -> Any:
    """An Engine (class `cls`) whose forward pass is llama.cpp's, on the GGUF `args.model`."""
    from danlu.infer.engine import chat_template_for, default_name
    from danlu.infer.options import serving_threads

    if args.adapter:
        raise UsageError(
            "--backend llamacpp serves a GGUF as it is; merge the adapter into one first: "
            f"danlu export --model {args.model} --adapter {args.adapter} --format gguf --out DIR"
        )
    path = gguf_file(args.model)
    tokenizer = _tokenizer(args.model, path)
    runner = LlamaCppRunner(
        path,
        rows=config.max_batch_size,
        context_len=config.max_model_len,
        threads=serving_threads(args.threads, "llamacpp"),
        gpu_layers=gpu_layers(args.device),
    )
    try:
        return cls(
            None,
            tokenizer,
            name=name or default_name(args),
            chat_template=chat_template_for(tokenizer, template, args),
            config=config,
            runner=runner,
        )
    except BaseException:
        runner.close()
        raise


def _tokenizer(spec: str, path: Path) -> Any:
    """The HF tokenizer of a GGUF (read from its metadata by transformers), so text, chat
    templates and incremental detokenising are exactly the native engine's."""
    from transformers import AutoTokenizer

    from danlu.models import EMBEDDED
    from danlu.models.check import check_gguf
    from danlu.models.resolve import resolve_model

    if spec in EMBEDDED:  # converted once already for the native engine: reuse its tokenizer
        return AutoTokenizer.from_pretrained(resolve_model(spec))
    check_gguf(path, f"model '{path}'")
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
