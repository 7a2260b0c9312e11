"""An Ollama Modelfile for an exported GGUF: the chat template in Ollama's Go-template syntax,
its stop tokens and the sampling defaults of generation_config. A default system prompt the
template inserts is part of the TEMPLATE, as in the chat template.

The Go template is derived from the model's own Jinja chat template, not from a table of
families: each role's wrapper is what the chat template adds when one message of that role
(with a placeholder as its content) is appended to a conversation, and the generation prompt is
what `add_generation_prompt` adds. That holds for every template in which a conversation's
rendering is a prefix of its extension's (ChatML/Qwen, Llama-3, GLM-4, Mistral v7, SmolLM...);
a template that rewrites earlier turns (e.g. drops past reasoning) is refused by name rather
than exported with a template that would not match training.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danlu.utils.errors import UsageError

_log = logging.getLogger("danlu.export")

_MARK = "\u2063DANLU{}\u2063"  # an invisible separator no real template emits
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Wrappers:
    """What the chat template puts around each role's content, and after the last turn."""

    before: dict[str, str]
    """Before a turn's content; the system one includes the conversation's start (a system
    turn comes first or not at all)."""
    after: dict[str, str]
    generation: str
    opening: str
    """What comes before the first turn when that is not a system turn: the conversation's
    start, and the default system turn some templates insert (SmolLM2, Qwen2.5, Llama 3.1)."""


def adds_bos(tok: Any) -> bool:
    ids = tok("x")["input_ids"]
    return bool(tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id)


def derive(tok: Any, template: str) -> Wrappers:
    """The role wrappers of `template`, probed with placeholder contents."""
    convo = [{"role": r, "content": _MARK.format(i)} for i, r in enumerate(
        ["system", "user", "assistant", "user", "assistant"])]  # fmt: skip
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    previous = ""
    for k in range(1, len(convo) + 1):
        text = _probe(tok, template, convo[:k])
        if not text.startswith(previous):
            raise UsageError("export: the chat template re-renders earlier turns; write the "
                             "Ollama TEMPLATE by hand (the GGUF itself carries the template)")  # fmt: skip
        piece, previous = text[len(previous) :], text
        role, mark = convo[k - 1]["role"], convo[k - 1]["content"]
        if mark not in piece:
            raise UsageError(f"export: the chat template drops a {role} turn's content")
        head, tail = piece.split(mark)
        _agree(before, role, head)
        _agree(after, role, tail)
    closed = _probe(tok, template, convo[:4])
    generation = _probe(tok, template, convo[:4], generation=True)[len(closed) :]
    return Wrappers(before, after, generation, _opening(tok, template, before["user"]))


def _probe(tok: Any, template: str, messages: list[dict], generation: bool = False) -> str:
    """The template's text for `messages`, as llama.cpp will see it: without the BOS it adds
    itself when the tokenizer does (the GGUF's add_bos_token; the template's own would double
    it; SmolLM2's BOS is <|im_start|>, which it never adds), and without the EOS some templates
    (Phi-3) end a conversation that asks for no reply with (Ollama always asks for one)."""
    try:
        text = tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                       add_generation_prompt=generation)  # fmt: skip
    except Exception as exc:  # jinja errors and raise_exception() alike
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"export: the chat template cannot render a probe conversation "
                         f"({reason}); write the Ollama TEMPLATE by hand") from exc  # fmt: skip
    bos = tok.bos_token if adds_bos(tok) else None
    text = text[len(bos) :] if bos and text.startswith(bos) else text
    eos = tok.eos_token
    return text[: -len(eos)] if not generation and eos and text.endswith(eos) else text


def _agree(table: dict[str, str], role: str, text: str) -> None:
    """Record a wrapper; a role seen again must be wrapped the same way."""
    if role in table and table[role] != text:
        raise UsageError(f"export: the chat template wraps {role} turns differently by position")
    table.setdefault(role, text)


def _opening(tok: Any, template: str, before_user: str) -> str:
    mark = _MARK.format(9)
    head = _probe(tok, template, [{"role": "user", "content": mark}]).split(mark)[0]
    if not head.endswith(before_user):
        raise UsageError("export: the chat template wraps a first user turn differently")
    return head[: len(head) - len(before_user)]


def go_template(w: Wrappers) -> str:
    """Ollama's TEMPLATE over .Messages."""

    def lit(s: str) -> str:
        if "{{" in s or '"""' in s:
            raise UsageError("export: the chat template's text cannot be quoted in a Modelfile")
        return s

    out = ["{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"]
    if w.opening:
        out.append(f'{{{{ if and (eq $i 0) (ne .Role "system") }}}}{lit(w.opening)}{{{{ end }}}}')
    for n, role in enumerate(ROLES):
        keyword = "if" if n == 0 else "else if"
        closing = (f"{{{{ if not $last }}}}{lit(w.after[role])}{{{{ end }}}}"
                   if role == "assistant" else lit(w.after[role]))  # fmt: skip
        out.append(
            f'{{{{ {keyword} eq .Role "{role}" }}}}{lit(w.before[role])}{{{{ .Content }}}}{closing}'
        )
    out.append("{{ end }}")
    out.append(f'{{{{ if and $last (ne .Role "assistant") }}}}{lit(w.generation)}{{{{ end }}}}')
    out.append("{{ end }}")
    return "".join(out)


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def modelfile(gguf_name: str, tok: Any, template: str | None, stops: list[str],
              generation_config: dict[str, Any], context: int) -> str:  # fmt: skip
    """The Modelfile text for `gguf_name` beside it (no chat template: the prompt as is). A
    template that has no Go form gets no TEMPLATE line but a comment saying why: Ollama then
    falls back on the template inside the GGUF."""
    lines = [f"FROM ./{gguf_name}"]
    try:
        body = go_template(derive(tok, template)) if template else "{{ .Prompt }}"
        lines.append(f'TEMPLATE """{body}"""')
    except UsageError as exc:
        _log.warning("%s; the Modelfile has no TEMPLATE", exc)
        lines.append(f"# no TEMPLATE: {exc}")
    lines += [f"PARAMETER stop {_quote(s)}" for s in stops]
    lines.append(f"PARAMETER num_ctx {context}")
    for hf, ollama in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                       ("repetition_penalty", "repeat_penalty")):  # fmt: skip
        if isinstance(generation_config.get(hf), (int, float)):
            lines.append(f"PARAMETER {ollama} {generation_config[hf]}")
    return "\n".join(lines) + "\n"


def write_modelfile(dest: Path, text: str) -> Path:
    path = dest / "Modelfile"
    path.write_text(text, encoding="utf-8")
    return path
