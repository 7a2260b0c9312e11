"""Constants and small helpers shared by the inference tests (fixtures are in conftest.py)."""

from __future__ import annotations

PARROT_REPLY = "丹炉炼丹，你好世界！🔥 Hello world. The end."
"""What the parrot model answers to the chat PARROT_QUESTION (greedy)."""
PARROT_QUESTION = "你好"
CHATTER_TOKEN = "a"
"""The one token the chatter model says, forever."""
STORY_PROMPT = "Once upon a time"
PARROT_STORY = " there was a furnace called 丹炉 that made 金丹 every day."
"""How the parrot continues STORY_PROMPT as a plain completion (greedy)."""


def overfit(model, tokenizer, texts: list[str], name: str, steps: int = 200) -> None:
    """Train `model` on `texts` until it says them back (loss < 0.05), on one thread: a
    64-wide model trains faster on one thread than on a shared two."""
    import torch

    batches = [torch.tensor([tokenizer.encode(t, add_special_tokens=False)]) for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            loss = sum(model(input_ids=ids, labels=ids).loss for ids in batches)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if loss.item() < 0.01:
                break
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.05, f"the {name} did not learn its lines (loss {loss.item():.3f})"
    model.eval()


def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    """transformers' own greedy generate (the reference), cut after the first EOS."""
    import torch

    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=2,
        )
    tokens = out[0, len(prompt) :].tolist()
    return tokens[: tokens.index(2) + 1] if 2 in tokens else tokens


def forward_greedy(model, prompt: list[int], n: int, eos: int = 2) -> list[int]:
    """Greedy decoding by a full forward pass per token, no KV cache and no `generate`: the
    reference that depends on neither transformers' nor peft's generation code (peft's
    `generate` drops a prefix adapter's key/values on transformers >= 5.24)."""
    import torch

    ids = list(prompt)
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(n):
            x = torch.tensor([ids])
            logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
            token = int(logits[0, -1].argmax())
            out.append(token)
            ids.append(token)
            if token == eos:
                break
    return out


# The "caller" model (conftest.caller_dir) calls a tool for WEATHER_Q and reasons for WHY_Q.
WEATHER_Q = "What is the weather in Hangzhou?"
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Hangzhou"}}\n</tool_call>'
WHY_Q = "Should I take an umbrella?"
THINK = "<think>It rains in spring.</think>\n\nTake an umbrella."
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip


def serve(engine):
    """A live server on `engine` with the limits the server tests expect (no API key, 64 KiB
    bodies, 8 requests in flight, max_tokens 200): yields the handle, stops it after."""
    from danlu.infer.launch import start_server
    from danlu.infer.openai_api import Limits
    from danlu.infer.server import ServerOptions

    options = ServerOptions(
        max_body_bytes=64 * 1024, max_concurrent=8, limits=Limits(max_tokens=200)
    )
    with start_server(engine, options=options) as handle:
        yield handle
