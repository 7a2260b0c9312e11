"""Run the server in-process on a free local port: for `make demo`, tests and the benchmark.

The socket is bound here (port 0: the OS picks a free one) and handed to uvicorn, so there is no
window in which another process can take the port between choosing and binding it.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from typing import Any

from danlu.config import ModelArgs
from danlu.infer.engine import Engine, EngineConfig
from danlu.infer.options import serving_threads
from danlu.infer.server import ServerOptions, create_app


class ServerHandle:
    """A running server: `url` (no trailing slash; the OpenAI base URL is `url + "/v1"`)."""

    def __init__(self, server: Any, thread: threading.Thread, url: str, engine: Engine, owns: bool):
        self.server, self.thread, self.url, self.engine = server, thread, url, engine
        self._owns_engine = owns

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        """Stop serving (in-flight streams are cut) and, if we loaded it, free the model."""
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if self._owns_engine:
            self.engine.close()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(
    model: Engine | ModelArgs,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    options: ServerOptions | None = None,
    engine_config: EngineConfig | None = None,
    timeout: float = 60.0,
) -> ServerHandle:
    """Serve `model` (an Engine, or ModelArgs to load one) in a background thread; returns
    once it accepts connections. `port=0` picks a free port.

        with start_server(ModelArgs(model="runs/x/final")) as srv:
            OpenAI(base_url=srv.base_url, api_key="-").chat.completions.create(...)
    """
    import uvicorn

    owns = not isinstance(model, Engine)
    if owns:
        model = dataclasses.replace(model, threads=serving_threads(model.threads))
    engine = Engine.load(model, config=engine_config) if owns else model
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    app = create_app(engine, options)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="danlu-serve"
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            if owns:
                engine.close()
            raise RuntimeError("the danlu server did not start")
        time.sleep(0.01)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return ServerHandle(server, thread, f"http://{shown}:{bound[1]}", engine, owns)
