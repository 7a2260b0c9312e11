"""The scheduler thread: continuous batching over one KV cache, with a bounded wait when idle.

Loop: admit waiting sequences (when idle, wait up to `wait_ms` for more to arrive so a burst is
prefilled together), prefill them as one left-padded group and merge them into the running
batch, then run one decode step for every running row. Rows that finish, hit a stop string,
or whose client went away leave the batch at once (their cache rows are dropped), so a new
request never waits for the longest one in flight (continuous batching). Models whose cache
cannot be merged fall back to dynamic batching: a new group starts when the running one ends.

Everything the model touches runs on this one thread; callers talk to it through `add` and
receive events through their request's sink (called from this thread: keep sinks cheap).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from danlu.infer.requests import Output, Sequence
from danlu.infer.runner import Batch, ModelRunner
from danlu.infer.sampling import choose

log = logging.getLogger("danlu.infer")

BeamFn = Callable[[Sequence], list[int]]


class Scheduler:
    def __init__(
        self,
        runner: ModelRunner,
        *,
        max_batch: int,
        wait_ms: float,
        context_len: int,
        beam: BeamFn,
    ) -> None:
        self.runner = runner
        self.max_batch, self.wait = max_batch, wait_ms / 1000.0
        self.context_len = context_len
        self.beam = beam
        self.cv = threading.Condition()
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.batch: Batch | None = None
        self.closed = False
        self.stats = {"steps": 0, "rows": 0, "prefills": 0, "max_rows": 0}
        self.thread = threading.Thread(target=self._loop, name="danlu-scheduler", daemon=True)
        self.thread.start()

    def add(self, seqs: list[Sequence]) -> None:
        with self.cv:
            if self.closed:
                raise RuntimeError("the engine is closed")
            self.waiting.extend(seqs)
            self.cv.notify()

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify()
        self.thread.join(timeout=30)

    @property
    def load(self) -> tuple[int, int]:
        """(running rows, waiting rows)."""
        return len(self.running), len(self.waiting)

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                group, beam = self._take()
                if self.closed:
                    break
                try:
                    if beam is not None:
                        self._run_beam(beam)
                    if group:
                        self._start(group)
                    if self.running:
                        self._step()
                except Exception as exc:  # one failure must not kill the server
                    log.exception("generation failed")
                    self._fail([*group, *self.running], exc)
        self._fail([*self.waiting, *self.running], None)

    def _take(self) -> tuple[list[Sequence], Sequence | None]:
        with self.cv:
            if not self.running:
                while not self.waiting and not self.closed:
                    self.cv.wait()
                deadline = time.monotonic() + self.wait
                while len(self.waiting) < self.max_batch and not self.closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.cv.wait(left)
            if self.closed:
                return [], None
            joinable = not self.running or self.runner.can_join
            room = self.max_batch - len(self.running) if joinable else 0
            group: list[Sequence] = []
            while self.waiting and len(group) < room:
                seq = self.waiting[0]
                if seq.request.cancelled.is_set():
                    self.waiting.popleft()
                    self._send(seq, seq.finish_now("cancelled"))
                elif seq.request.params.num_beams > 1:
                    if self.running or group:
                        break  # beam search runs alone, after what is in flight
                    return [], self.waiting.popleft()
                else:
                    group.append(self.waiting.popleft())
            return group, None

    def _start(self, group: list[Sequence]) -> None:
        """Prefill a group (each distinct prompt once), choose first tokens, join the batch."""
        import torch

        keys: dict[tuple[str, int], int] = {}
        prompts, echo_k = [], []
        for seq in group:
            key = (seq.request.id, seq.index // seq.request.n)
            if key not in keys:
                keys[key] = len(prompts)
                prompts.append(seq.prompt)
                echo_k.append(seq.echo_k)
        batch, last, prompt_lp = self.runner.prefill(prompts, echo_k)
        self.stats["prefills"] += 1
        rows = [keys[(s.request.id, s.index // s.request.n)] for s in group]
        for seq, row in zip(group, rows, strict=True):
            if seq.echo_k is not None:
                seq.prompt_lp = prompt_lp[row]
        live = [i for i, s in enumerate(group) if not self._zero_budget(s)]
        if not live:
            self.runner.release(batch)
            return
        group = [group[i] for i in live]
        rows = [rows[i] for i in live]
        if rows != list(range(batch.size)):
            batch = self.runner.select(batch, rows)
        keep = self._apply(group, last[torch.tensor(rows, device=last.device)], batch)
        group, batch = self._keep(group, batch, keep)
        if not group:
            return
        if self.batch is None:
            self.batch, self.running = batch, group
        else:
            self.batch = self.runner.merge(self.batch, batch)
            self.running = self.running + group

    def _zero_budget(self, seq: Sequence) -> bool:
        """max_tokens 0 (echo only): the choice ends right after the prompt is scored."""
        if seq.max_new > 0:
            return False
        self._send(seq, seq.emit("", "length"))
        return True

    def _step(self) -> None:
        assert self.batch is not None
        alive = []
        for i, seq in enumerate(self.running):
            if seq.request.cancelled.is_set():
                self._send(seq, seq.finish_now("cancelled"))
            else:
                alive.append(i)
        self.running, self.batch = self._keep(self.running, self.batch, alive)
        if not self.running:
            return
        logits = self.runner.decode(self.batch)
        self.stats["steps"] += 1
        self.stats["rows"] += len(self.running)
        self.stats["max_rows"] = max(self.stats["max_rows"], len(self.running))
        keep = self._apply(self.running, logits, self.batch)
        self.running, self.batch = self._keep(self.running, self.batch, keep)

    def _apply(self, seqs: list[Sequence], logits: Any, batch: Batch) -> list[int]:
        """Choose each row's next token, emit what it completes; returns the rows still going."""
        import torch

        tokens, lps = choose(logits, [s.row for s in seqs])
        batch.last = torch.tensor(tokens, dtype=torch.long, device=batch.next_pos.device)
        positions = batch.next_pos.tolist()
        keep = []
        for i, seq in enumerate(seqs):
            out = seq.advance(tokens[i], lps[i])
            if out is None and positions[i] >= self.context_len:
                out = seq.finish_now("length")  # the context is full: this token cannot be fed
            if out is not None:
                self._send(seq, out)
            if not seq.done:
                keep.append(i)
        return keep

    def _keep(
        self, seqs: list[Sequence], batch: Batch, keep: list[int]
    ) -> tuple[list[Sequence], Batch | None]:
        if not keep:
            self.runner.release(batch)
            return [], None
        if len(keep) != len(seqs):
            batch = self.runner.select(batch, keep)
        return [seqs[i] for i in keep], batch

    def _run_beam(self, seq: Sequence) -> None:
        for token in self.beam(seq):
            out = seq.advance(token, None)
            if out is not None:
                self._send(seq, out)
            if seq.done:
                return
        self._send(seq, seq.finish_now("length"))

    def _send(self, seq: Sequence, out: Output) -> None:
        try:
            seq.request.sink(out)
        except Exception:  # a caller that went away: stop working for it
            log.debug("sink of request %s failed; cancelling it", seq.request.id, exc_info=True)
            seq.request.cancel()

    def _fail(self, seqs: list[Sequence], exc: BaseException | None) -> None:
        reason = "error" if exc is not None else "cancelled"
        message = f"{type(exc).__name__}: {exc}" if exc is not None else None
        for seq in seqs:
            if not seq.done:
                self._send(seq, seq.finish_now(reason, message))
        self.running, self.batch = [], None
        self.runner.reset()  # nothing runs any more: a runner holding rows frees them all
        if exc is None:
            self.waiting.clear()
