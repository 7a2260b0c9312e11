"""`danlu rag index | ask`: knowledge enhancement (DESIGN §10).

  danlu rag index --docs examples/docs --index runs/tea-index
  danlu rag ask --index runs/tea-index "How hot should the water be for green tea?"
  danlu rag ask --index runs/tea-index --json --no-generate "绿茶用多少度的水？"

`index` mirrors --docs into the index: new and changed files are (re-)embedded, removed ones
deleted, unchanged ones left alone. `ask` retrieves the best passages (dense + BM25 fused),
gives them to the model with the knowledge-base prompt and streams a cited answer. Every
`rag_*` config key (and `top_k`, `chunk_size`, `retrieval`, ...) can be set in CONFIG or as
key=value; the flags are shorthands.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from danlu.cli.common import keys_help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + "\n\n" + (__doc__ or "").split("\n\n", 1)[1]
    subs = parser.add_subparsers(dest="rag_command", metavar="ACTION", required=True)
    index = subs.add_parser("index", help="build or update an index from documents")
    index.add_argument("--docs", nargs="+", metavar="PATH", help="files and folders (rag_docs)")
    _common(index)
    index.add_argument("--quiet", action="store_true", help="no progress lines")
    ask = subs.add_parser("ask", help="answer a question from an index, with citations")
    ask.add_argument("question", nargs="+", metavar="QUESTION",
                     help="the question (key=value words among it are config overrides)")  # fmt: skip
    ask.add_argument("--top-k", type=int, help="passages to use (top_k)")
    ask.add_argument("--json", action="store_true",
                     help='print {"answer", "passages": [{"source", "text", "score"}]}')  # fmt: skip
    ask.set_defaults(overrides=[])
    ask.add_argument("--no-generate", action="store_true", help="only retrieve; print passages")
    ask.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    from danlu.infer.options import add_model_arguments

    add_model_arguments(ask)
    _common(ask)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", help="the index folder (rag_index)")
    parser.add_argument("--config", help="a YAML config with rag keys")
    if parser.prog.endswith(" index"):
        parser.add_argument("overrides", metavar="key=value", nargs="*", help="any config key")
    parser.epilog = keys_help(_RAG_KEYS)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


_RAG_KEYS = {
    "rag_docs", "rag_index", "embedding_model", "embedding_batch_size", "chunk_size",
    "chunk_overlap", "parent_chunk_size", "retrieval", "top_k", "rrf_k", "reranker",
    "score_threshold", "rag_template", "rag_max_new_tokens",
}  # fmt: skip


def _split_question(args: argparse.Namespace) -> None:
    """`ask` takes its question and key=value overrides in any order: a word that sets a known
    config key is an override, the rest is the question."""
    from danlu.config.schema import key_index

    keys = key_index()
    words = args.question
    found = [w for w in words if re.fullmatch(r"[a-z_0-9]+=.*", w) and w.split("=")[0] in keys]
    args.question = " ".join(w for w in words if w not in found)
    args.overrides = [*found, *args.overrides]  # the latter came after a flag (cli._parse)


def config_of(args: argparse.Namespace) -> Any:
    from danlu.config import load_config

    flags = []
    if getattr(args, "docs", None):
        flags.append(f"rag_docs={json.dumps(args.docs)}")
    if args.index:
        flags.append(f"rag_index={json.dumps(args.index)}")
    if getattr(args, "top_k", None) is not None:
        flags.append(f"top_k={args.top_k}")
    return load_config(args.config, [*args.overrides, *flags])


def run(args: argparse.Namespace) -> int:
    return _index(args) if args.rag_command == "index" else _ask(args)


def _index(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    report = index_docs(cfg, (lambda _: None) if args.quiet else _stderr)
    for source, why in report.skipped:
        print(f"skipped {source}: {why}")
    print(f"index {cfg.rag_index}: {report.summary()}")
    return 0


def index_docs(cfg: Any, log: Any) -> Any:
    """Build or update the index `cfg` names; its IndexReport."""
    from danlu.rag import open_store
    from danlu.rag.embed import Embedder
    from danlu.rag.index import build_index, scan_docs

    found = scan_docs(cfg)
    embedder = Embedder(cfg.embedding_model, cfg.embedding_batch_size)
    store = open_store(cfg, create=True)
    try:
        return build_index(cfg, embedder, store, log, found)
    finally:
        store.close()


def _ask(args: argparse.Namespace) -> int:
    from danlu.infer.options import model_args

    _split_question(args)
    cfg = config_of(args)
    if args.no_generate:
        _print_passages(retrieve(cfg, args.question), args.json)
        return 0
    write = (lambda _: None) if args.json else sys.stdout.write
    answer, passages = grounded_answer(cfg, model_args(args), args.question,
                                       cfg.rag_max_new_tokens, write, args.template,
                                       args.temperature)  # fmt: skip
    if args.json:
        print(json.dumps({"answer": answer, "passages": [p.as_json() for p in passages]},
                         ensure_ascii=False))  # fmt: skip
    return 0


def retrieve(cfg: Any, question: str) -> list:
    from danlu.rag import open_index

    store, _, retriever = open_index(cfg)
    try:
        return retriever.search(question)
    finally:
        store.close()


def grounded_answer(cfg: Any, model_args: Any, question: str, max_new: int, write: Any,
                    template: str = "auto", temperature: float = 0.0) -> tuple[str, list]:  # fmt: skip
    """Retrieve, answer with the model (streamed through `write`), then the citation lines;
    returns (answer, passages). Below score_threshold the refusal is the answer."""
    from danlu.infer.engine import Engine, EngineConfig
    from danlu.rag.ask import citations, ground

    passages = retrieve(cfg, question)
    grounded = ground(question, passages, cfg.rag_template, cfg.score_threshold)
    if grounded.refusal is not None:
        write(grounded.refusal + "\n")
        return grounded.refusal, passages
    engine = Engine.load(model_args, template=template,
                         config=EngineConfig(max_batch_size=1, batch_wait_ms=0))  # fmt: skip
    pieces: list[str] = []
    try:
        for piece in answer_stream(engine, grounded, max_new, temperature):
            pieces.append(piece)
            write(piece)
            sys.stdout.flush()
    finally:
        engine.close()
    write("\n\n" + "\n".join(citations(passages)) + "\n")
    return "".join(pieces).strip(), passages


def answer_stream(engine: Any, grounded: Any, max_new: int, temperature: float) -> Any:
    """The answer's text pieces as the engine writes them (greedy at temperature 0)."""
    from danlu.infer.params import GenParams
    from danlu.utils.errors import UsageError

    prompt = engine.chat_prompt([{"role": "user", "content": grounded.prompt}])
    room = engine.room(prompt)
    if room < 16:
        raise UsageError(
            f"top_k: the question with {len(grounded.passages)} passages is {len(prompt)} tokens, "
            f"too long for the model's context of {engine.context_len}; lower top_k or chunk_size"
        )
    params = GenParams(max_new_tokens=min(max_new, room), temperature=temperature)
    for out in engine.stream(prompt, params, extra_eos=engine.chat_eos):
        if out.finish_reason == "error":
            raise RuntimeError(out.error or "generation failed")
        if out.text:
            yield out.text


def _print_passages(passages: list, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"answer": None, "passages": [p.as_json() for p in passages]},
                         ensure_ascii=False))  # fmt: skip
        return
    from danlu.rag.split import titled

    for i, p in enumerate(passages, 1):
        print(f"[{i}] {p.source} (score {p.score:.3f})\n{titled(p.headings, p.text)}\n")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
