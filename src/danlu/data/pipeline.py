"""The top-level data API: config -> tokenised, mixed, split `datasets.Dataset`s + report.

    train, eval, report = build_dataset(cfg, tokenizer)

Per source: read (streaming) -> check the stage fits -> tokenise in workers -> Arrow file in the
cache (reused on the next run). Then mix and split by index; the datasets are memory-mapped
views of the cache files, so even millions of samples cost little RAM. `train`/`eval` have the
columns a Trainer consumes: input_ids + labels (pt/sft) or chosen_*/rejected_* (rm/dpo).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from danlu.config.sections import DataArgs, DataSource
from danlu.data import cache
from danlu.data.files import resolve_files
from danlu.data.formats import RecordRules
from danlu.data.mix import mix
from danlu.data.readers import SourceStats, is_local, read_source
from danlu.data.report import build_report, row_counts
from danlu.data.tokenize import EncoderFactory, tokenize_to_arrow
from danlu.data.types import Conversation
from danlu.utils.errors import RuntimeFailure, UsageError
from danlu.utils.system import available_cpus

_log = logging.getLogger("danlu.data")
_STAGE_NEEDS = {
    "pt": ("text", "chat"), "sft": ("chat",), "rm": ("pairwise",), "dpo": ("pairwise",),
    "kto": ("chat",), "grpo": ("chat",),
}  # fmt: skip


def default_encoder(tokenizer: Any, args: DataArgs, stage: str) -> Callable[[Conversation], Any]:
    """danlu's own encoder: the configured chat template + the DESIGN §3 loss-mask rule."""
    from danlu.data import encode as enc
    from danlu.data.templates import get_template

    template = get_template(args.template, tokenizer)
    special = {"rm": enc.encode_pair, "dpo": enc.encode_pair, "kto": enc.encode_labelled,
               "grpo": enc.encode_prompt}.get(stage)  # fmt: skip

    def encode(conv: Conversation) -> Any:
        if special is not None:
            return special(conv, tokenizer, template, args)
        return enc.encode_conversation(conv, tokenizer, template, args, stage)

    return encode


default_encoder.code_modules = (  # type: ignore[attr-defined]
    "danlu.data.encode", "danlu.data.templates", "danlu.data.templates_builtin",
    "danlu.data.spans", "danlu.data.truncate",
)  # fmt: skip


def build_dataset(
    cfg: Any,
    tokenizer: Any,
    stage: str | None = None,
    seed: int | None = None,
    *,
    encoder: EncoderFactory | None = None,
    log: Callable[[str], None] | None = None,
    keep_source: bool = False,
) -> tuple[Any, Any, dict]:
    """(train, eval or None, report) from a Config (or a bare DataArgs plus stage and seed)."""
    args, stage, seed = _resolve(cfg, stage, seed)
    if not args.data:
        raise UsageError(
            "data: no data sources configured (set data: to a file, directory or glob)"
        )
    say = log or _log.info
    rules = record_rules(stage, getattr(cfg, "kto_tag", "kto_tag"))
    parts = [_prepare(i, src, args, (stage, rules), tokenizer, encoder or default_encoder, say)
             for i, src in enumerate(args.data)]  # fmt: skip
    weights = [src.weight for src in args.data]
    m = mix([len(ds) for ds, _ in parts], weights, args.val_size, seed)
    report = build_report(
        stage, [s for _, s in parts], m, [row_counts(ds) for ds, _ in parts], weights
    )
    full = _concat([ds for ds, _ in parts])
    if not keep_source:
        full = full.remove_columns("source")
    train = full.select(m.train)
    evals = full.select(m.eval) if len(m.eval) else None
    say(f"data: {report['summary']}")
    return train, evals, report


def _resolve(cfg: Any, stage: str | None, seed: int | None) -> tuple[DataArgs, str, int]:
    if isinstance(cfg, DataArgs):
        return cfg, stage or "sft", 42 if seed is None else seed
    return cfg.section("data"), stage or cfg.stage, cfg.seed if seed is None else seed


def record_rules(stage: str, kto_tag: str = "kto_tag") -> RecordRules:
    """What `stage` asks of each record (grpo: prompts only; kto: a label in `kto_tag`)."""
    return RecordRules(prompt_only=stage == "grpo", label=kto_tag if stage == "kto" else None)


def _concat(datasets_: list[Any]) -> Any:
    import datasets

    return datasets_[0] if len(datasets_) == 1 else datasets.concatenate_datasets(datasets_)


def _prepare(
    index: int, src: DataSource, args: DataArgs, staged: tuple[str, RecordRules], tokenizer: Any,
    factory: EncoderFactory, say: Callable[[str], None],
) -> tuple[Any, dict]:  # fmt: skip
    """One source -> (memory-mapped Dataset, its report entry), from the cache when possible."""
    import datasets

    stage, rules = staged
    parts = _key_parts(src, args, stage, tokenizer, factory)
    if rules != RecordRules():  # (the keys of pt/sft/rm/dpo caches stay what they were)
        parts["rules"] = dataclasses.asdict(rules)
    key = cache.cache_key(parts)
    entry = cache.lookup(key) if args.data_cache else None
    if entry is not None:
        stats = cache.read_stats(entry)
        say(f"data: {src.path}: {stats['kept']} samples reused from the cache ({entry})")
        stats["cache"] = "hit"
    else:
        entry, stats = _tokenise(index, src, args, staged, tokenizer, factory, key, say)
        stats["cache"] = "miss"
    return datasets.Dataset.from_file(str(entry / cache.DATA_FILE)), stats


def _key_parts(
    src: DataSource, args: DataArgs, stage: str, tokenizer: Any, factory: EncoderFactory
) -> dict:
    files = resolve_files(src.path) if is_local(src.path) else []
    settings = {k: getattr(args, k) for k in (
        "template", "cutoff_len", "max_source_len", "max_target_len", "train_on", "on_bad_record",
    )}  # fmt: skip
    return {
        "version": 1,
        "files": [str(f.resolve()) for f in files] or src.path,
        "content": cache.files_digest(files) if files else None,
        "source": {k: v for k, v in dataclasses.asdict(src).items() if k not in ("path", "weight")},
        "settings": settings,
        "stage": stage,
        "tokenizer": _tokenizer_id(tokenizer),
        "encoder": cache.encoder_identity(factory),
    }


def _tokenizer_id(tokenizer: Any) -> str:
    """Memoised on the tokenizer object: hashing the serialised vocabulary takes a moment."""
    ident = getattr(tokenizer, "_danlu_identity", None)
    if ident is None:
        ident = cache.tokenizer_identity(tokenizer)
        with contextlib.suppress(AttributeError):
            tokenizer._danlu_identity = ident
    return ident


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
"""Write failures that are the cache's place, not the data."""


def _tokenise(
    index: int, src: DataSource, args: DataArgs, staged: tuple[str, RecordRules], tokenizer: Any,
    factory: EncoderFactory, key: str, say: Callable[[str], None],
) -> tuple[Any, dict]:  # fmt: skip
    stage, rules = staged
    workers = args.preprocessing_num_workers or available_cpus()
    read = SourceStats(src.path)
    tmp = cache.new_entry(key)
    start = time.perf_counter()
    try:
        records = read_source(src, read, args.on_bad_record, index, rules)
        convs = _check_stage(records, stage, src, read)
        tok = tokenize_to_arrow(
            convs, tmp / cache.DATA_FILE, factory, tokenizer, args, stage, workers
        )
        if tok.kept == 0:
            reasons = ", ".join(f"{n} {r}" for r, n in tok.dropped.most_common())
            raise UsageError(f"{src.path}: no samples left after tokenisation (dropped: {reasons})")
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise RuntimeFailure(
                f"data cache {cache.cache_root()}: {os.strerror(exc.errno)} while writing the "
                "tokenised data; free space or point DANLU_HOME at another disk"
            ) from exc
        raise
    if read.detected:
        say(f"data: {src.path}: detected format {read.format}")
    stats = {**dataclasses.asdict(read), "kept": tok.kept, "truncated": tok.truncated,
             "dropped": dict(sorted(tok.dropped.items()))}  # fmt: skip
    secs = time.perf_counter() - start
    say(
        f"data: {src.path}: tokenised {read.records} records in {secs:.1f}s with {workers} worker(s)"
    )
    return cache.commit(tmp, key, stats), stats


_NEED = {
    "pt": "text", "sft": "conversation/instruction", "rm": "pairwise", "dpo": "pairwise",
    "kto": "labelled conversation/instruction", "grpo": "prompt-only",
}  # fmt: skip


def _check_stage(
    convs: Iterable[Conversation], stage: str, src: DataSource, stats: SourceStats
) -> Iterator[Conversation]:
    """The stage must fit the records (the format is fixed per source: check the first)."""
    it = iter(convs)
    for conv in it:
        kind = "text" if conv.text is not None else "pairwise" if conv.chosen else "chat"
        if kind not in _STAGE_NEEDS[stage]:
            raise UsageError(
                f"{src.path}: stage {stage} needs {_NEED[stage]} records, "
                f"but this source is format {stats.format}"
            )
        yield conv
        break
    yield from it
