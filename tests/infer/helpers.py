"""Constants and small helpers shared by the inference tests (fixtures are in conftest.py)."""

from __future__ import annotations

PARROT_REPLY = "丹炉炼丹，你好世界！🔥 Hello world. The end."
"""What the parrot model answers to the chat PARROT_QUESTION (greedy)."""
PARROT_QUESTION = "你好"
STORY_PROMPT = "Once upon a time"
PARROT_STORY = " there was a furnace called 丹炉 that made 金丹 every day."
"""How the parrot continues STORY_PROMPT as a plain completion (greedy)."""
