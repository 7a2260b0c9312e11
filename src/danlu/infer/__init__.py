"""Inference: the batching engine (`engine.Engine`), chat sessions, the OpenAI-compatible server
(`server`, started in-process by `launch.start_server`) and its web page (`web/index.html`).

Importing this package is cheap: torch, transformers, FastAPI and uvicorn load only when a
model is loaded or a server is created.
"""
