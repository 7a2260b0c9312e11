"""A question and its passages -> the prompt the model answers, and what to say when the
documents hold nothing close enough.

The default prompt is the seeds' (Langchain-ChatGLM's) knowledge-base template for Chinese
questions, and the same instructions in English otherwise; the passages are numbered so the
model can cite them as [1], [2]. A template of one's own (`rag_template`: a file or the text)
needs `{context}` and `{question}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from danlu.rag.retrieve import Passage
from danlu.rag.split import titled
from danlu.utils.errors import UsageError

TEMPLATE_ZH = (
    "已知信息：\n{context}\n\n"
    "根据上述已知信息，简洁和专业的来回答用户的问题，并用 [1]、[2] 这样的编号注明依据。"
    "如果无法从中得到答案，请说“根据已知信息无法回答该问题”，不允许在答案中添加编造成分，"
    "答案请使用中文。\n\n问题是：{question}"
)
TEMPLATE_EN = (
    "Known information:\n{context}\n\n"
    "Answer the user's question concisely and professionally from the information above, "
    "citing the passages you use by their numbers, like [1]. If the answer cannot be found in "
    'it, say "The documents do not say." Do not add anything made up.\n\nQuestion: {question}'
)
NO_ANSWER = {"zh": "根据已知信息无法回答该问题。", "en": "The documents do not say."}
_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True)
class Grounded:
    question: str
    passages: list[Passage]
    prompt: str
    """The user turn the model gets (the template filled in)."""
    refusal: str | None
    """Set when no passage reaches score_threshold: the answer, without calling the model."""


def language(text: str) -> str:
    return "zh" if _CJK.search(text) else "en"


def load_template(spec: str | None, question: str) -> str:
    if spec is None:
        return TEMPLATE_ZH if language(question) == "zh" else TEMPLATE_EN
    path = Path(spec).expanduser()
    text = path.read_text(encoding="utf-8") if len(spec) < 4096 and path.is_file() else spec
    for slot in ("{context}", "{question}"):
        if slot not in text:
            raise UsageError(f"rag_template: needs {slot} (the retrieved passages, the question)")
    return text


def ground(
    question: str, passages: list[Passage], template: str | None, threshold: float
) -> Grounded:
    """The prompt for `question` over `passages`, or the refusal when none is close enough."""
    if not question.strip():
        raise UsageError("question: empty")
    best = max((p.score for p in passages), default=None)
    if best is None or (threshold > 0 and best < threshold):
        return Grounded(question, passages, "", NO_ANSWER[language(question)])
    context = "\n\n".join(f"[{i}] {_titled(p)}" for i, p in enumerate(passages, 1))
    filled = load_template(template, question).replace("{context}", context)
    return Grounded(question, passages, filled.replace("{question}", question), None)


def _titled(passage: Passage) -> str:
    head = " > ".join(passage.headings)
    if not head or passage.text.startswith(head):
        return passage.text
    return titled(passage.headings, passage.text)


def citations(passages: list[Passage]) -> list[str]:
    """The lines that map each number to its source: `[1] tea.md#3`."""
    return [f"[{i}] {p.source}" for i, p in enumerate(passages, 1)]
