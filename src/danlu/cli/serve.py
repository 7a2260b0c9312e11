"""`danlu serve`: an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models),
/health, and a chat page at /. Binds 127.0.0.1 unless --host says otherwise.

With --api-key (or DANLU_API_KEY) every /v1 request needs `Authorization: Bearer KEY`.
Point any OpenAI client at http://HOST:PORT/v1; lm-evaluation-harness uses
`--model local-completions --model_args base_url=http://HOST:PORT/v1/completions,...`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from typing import Any

from danlu.infer.options import add_model_arguments, model_args, serving_threads
from danlu.utils.errors import RuntimeFailure, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("server")
    g.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, local only)"
    )
    g.add_argument(
        "--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)"
    )
    g.add_argument(
        "--api-key",
        default=None,
        help="require `Authorization: Bearer KEY` on /v1 (default: $DANLU_API_KEY)",
    )
    g.add_argument(
        "--served-model-name", help="model id clients use (default: the run or model name)"
    )
    g.add_argument(
        "--backend",
        choices=["native", "llamacpp"],
        default="native",
        help="native: transformers, any adapter unmerged, exactly as trained; llamacpp: a .gguf "
        "(danlu export makes one) through llama.cpp (default: %(default)s)",
    )
    g.add_argument(
        "--max-batch-size",
        type=int,
        default=16,
        help="rows decoded together (default: %(default)s)",
    )
    g.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="when idle, how long to gather requests into one batch (default: %(default)s)",
    )
    g.add_argument(
        "--max-concurrent",
        type=int,
        default=64,
        help="requests in flight before new ones get 429 (default: %(default)s)",
    )
    g.add_argument(
        "--max-tokens",
        type=int,
        default=4096,
        help="largest max_tokens a request may ask for (default: %(default)s)",
    )
    g.add_argument(
        "--max-model-len", type=int, help="context length to enforce (default: the model's)"
    )
    g.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="request body limit (default: 1 MiB)"
    )
    g.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    k = parser.add_argument_group("knowledge base")
    k.add_argument("--rag-index", help="ground chat answers on this index (danlu rag index); the "
                   "response's `passages` field lists the sources; also serves /v1/embeddings")  # fmt: skip
    k.add_argument("--embedding-model", help="serve /v1/embeddings with this sentence-transformers "
                   "folder (or auto: the embedded default); default: the index's")  # fmt: skip
    k.add_argument("--top-k", type=int, help="passages per grounded answer (default: 4)")
    add_model_arguments(parser)


def _knowledge(args: argparse.Namespace) -> Any:
    """The index and embedder behind --rag-index / --embedding-model, loaded before the model."""
    if not args.rag_index and not args.embedding_model:
        return None
    import threading

    from danlu.config import load_config
    from danlu.infer.grounding import Knowledge
    from danlu.rag import open_index
    from danlu.rag.ask import ground
    from danlu.rag.embed import Embedder

    keys = [f"rag_index={args.rag_index!r}"] if args.rag_index else []
    keys += [f"top_k={args.top_k}"] if args.top_k is not None else []
    keys += [f"embedding_model={args.embedding_model!r}"] if args.embedding_model else []
    cfg = load_config(None, keys)
    lock = threading.Lock()  # one retrieval at a time over the one SQLite connection
    retriever = open_index(cfg)[2] if args.rag_index else None
    embedder = retriever.embedder if retriever else Embedder(cfg.embedding_model)

    def grounded(question: str) -> tuple[str, list[dict], str | None]:
        with lock:
            passages = retriever.search(question)
        g = ground(question, passages, cfg.rag_template, cfg.score_threshold)
        return g.prompt, [p.as_json() for p in passages], g.refusal

    def embed(texts: list[str]) -> tuple[list[list[float]], int]:
        with lock:
            return embedder.passages(texts).tolist(), sum(embedder.count(texts))

    return Knowledge(grounded if retriever else None, embed, embedder.name)


def run(args: argparse.Namespace) -> int:
    _check(args)
    import uvicorn

    from danlu.infer.engine import Engine, EngineConfig
    from danlu.infer.openai_api import Limits
    from danlu.infer.server import ServerOptions, create_app

    sock = _bind(args.host, args.port)
    knowledge = _knowledge(args)
    engine = Engine.load(
        model_args(args, threads=serving_threads(args.threads, args.backend)),
        name=args.served_model_name,
        template=args.template,
        config=EngineConfig(
            args.max_batch_size, args.batch_wait_ms, args.max_model_len, backend=args.backend
        ),
    )
    key = args.api_key or os.environ.get("DANLU_API_KEY") or None
    options = ServerOptions(
        api_key=key,
        max_body_bytes=args.max_body_bytes,
        max_concurrent=args.max_concurrent,
        limits=Limits(max_tokens=args.max_tokens),
        knowledge=knowledge,
    )
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"[serve] {engine.name} at http://{shown}:{port}  (OpenAI API: /v1, chat page: /, "
        f"auth: {'on' if key else 'off'})",
        file=sys.stderr,
        flush=True,
    )
    if not key and not _loopback(args.host):
        print(
            f"[serve] warning: listening on {args.host} without --api-key: anyone who can "
            "reach this port can use the model",
            file=sys.stderr,
        )
    config = uvicorn.Config(
        create_app(engine, options),
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
        lifespan="off",
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the Ctrl-C
        pass
    finally:
        engine.close()
    print("[serve] stopped", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> None:
    for name in ("max_batch_size", "max_concurrent", "max_tokens", "max_body_bytes"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: must be at least 1")
    if args.batch_wait_ms < 0:
        raise UsageError("--batch-wait-ms: must be >= 0")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: must be 0..65535")


def _bind(host: str, port: int) -> socket.socket:
    """Bind before loading the model, so a taken port fails in a second, not after the load."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeFailure(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
