"""Inference: generation with streaming (chat CLI, server and web page build on it)."""
