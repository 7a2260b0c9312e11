"""The one internal record type every reader produces and every later stage consumes.

Roles are normalised across formats:

| internal role | alpaca / prompt_response | conversations (ChatGLM3) / messages (OpenAI) | sharegpt |
|---|---|---|---|
| system        | `system`                 | system                                       | system |
| user          | instruction + input, prompt, history[i][0] | user                       | human |
| assistant     | output, response, history[i][1] | assistant (without a tool call)      | gpt |
| function_call | -                        | assistant with `tool_calls` / ChatGLM3 `metadata` | function_call |
| observation   | -                        | tool, observation                            | observation |

`assistant` and `function_call` turns are produced by the model and are the trained turns
(DESIGN §3 loss mask); everything else is context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "function_call", "observation"]
MODEL_ROLES: frozenset[str] = frozenset({"assistant", "function_call"})


@dataclass
class Message:
    role: Role
    content: str


@dataclass
class Conversation:
    """One training example, whatever file format it came from."""

    messages: list[Message]
    """The turns in order. For `stage: pt` a single `assistant`-less turn is not used: see text."""
    source: str
    """Where it came from, `file:line`: the 1-based line the record starts on (JSON arrays,
    JSONL, CSV, .txt paragraphs) or row number (Parquet, hub data sets), so every error and
    report names it."""
    tools: Any = None
    """Tool/function definitions (JSON-able) made available to the model, if any."""
    text: str | None = None
    """Raw document for `stage: pt` (format `text`); `messages` is empty then."""
    chosen: Message | None = None
    """Preferred final assistant turn (format `pairwise`); `messages` holds the prompt turns."""
    rejected: Message | None = None
    """Dispreferred final assistant turn (format `pairwise`)."""
    dataset: int = 0
    """Index of the `data:` source it came from (for the realised mix)."""
    meta: dict[str, Any] = field(default_factory=dict)
