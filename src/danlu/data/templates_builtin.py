"""Built-in chat templates (Jinja sources), for tokenizers that lack a chat template or carry a wrong one.

All output goes through `{{- ... -}}` expressions so that the template's own layout whitespace
never leaks into the rendered text: what each string literal says is exactly what is rendered.
Every template closes an assistant turn with an end-of-turn token (the tokenizer's EOS where the
format has no dedicated one), so the trained closer exists (DESIGN §3) and the model learns to stop.

Messages follow the Hugging Face convention: roles system/user/assistant/tool, tool calls as
`assistant.tool_calls[i].function.{name, arguments}`, tool definitions in `tools`.
"""

from __future__ import annotations

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)

# Renders each tool call of message `m` as a JSON object {"name", "arguments"}; `wrap_open` /
# `wrap_close` surround each call.
_CALLS = (
    "{%- for tc in m.tool_calls -%}"
    "{%- set f = tc.function if tc.function is defined else tc -%}"
    "{{- OPEN + ({'name': f.name, 'arguments': f.arguments} | tojson) + CLOSE -}}"
    "{%- endfor -%}"
)


def _calls(open_: str, close: str) -> str:
    return _CALLS.replace("OPEN", repr(open_)).replace("CLOSE", repr(close))


def _chatml(default_system: str | None) -> str:
    """ChatML (`<|im_start|>role\\n...<|im_end|>\\n`); tools listed in the system turn, Qwen-style."""
    default = "none" if default_system is None else repr(default_system)
    return (
        "{%- set has_sys = messages and messages[0].role == 'system' -%}"
        f"{{%- set sys = messages[0].content if has_sys else {default} -%}}"
        "{%- if tools -%}"
        "{%- set intro = (sys + '\\n\\n') if sys else '' -%}"
        "{{- '<|im_start|>system\\n' + intro + '# Tools\\n\\n<tools>' -}}"
        "{%- for t in tools -%}{{- '\\n' + (t | tojson) -}}{%- endfor -%}"
        "{{- '\\n</tools><|im_end|>\\n' -}}"
        "{%- elif sys -%}{{- '<|im_start|>system\\n' + sys + '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- set msgs = messages[1:] if has_sys else messages -%}"
        "{%- for m in msgs -%}"
        "{%- if m.role == 'assistant' and m.tool_calls -%}"
        "{{- '<|im_start|>assistant\\n' + ((m.content + '\\n') if m.content else '') -}}"
        + _calls("<tool_call>\n", "\n</tool_call>")
        + "{{- '<|im_end|>\\n' -}}"
        "{%- else -%}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


LLAMA3 = (
    "{{- bos_token if bos_token else '' -}}"
    "{%- if tools -%}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nYou can call these functions:' -}}"
    "{%- for t in tools -%}{{- '\\n' + (t | tojson) -}}{%- endfor -%}"
    "{{- '<|eot_id|>' -}}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- set role = 'ipython' if m.role == 'tool' else m.role -%}"
    "{{- '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' -}}"
    "{%- if m.role == 'assistant' and m.tool_calls -%}"
    + _calls("", "")
    + "{%- else -%}{{- m.content | trim -}}{%- endif -%}"
    "{{- '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- endif -%}"
)

# Meta's LLaMA-2 chat format: the system prompt goes inside the first [INST] block.
LLAMA2 = (
    "{%- set has_sys = messages and messages[0].role == 'system' -%}"
    "{%- set sys = messages[0].content if has_sys else '' -%}"
    "{%- set msgs = messages[1:] if has_sys else messages -%}"
    "{%- for m in msgs -%}"
    "{%- if m.role == 'assistant' -%}"
    "{{- ' ' + (m.content | trim) + ' ' + eos_token -}}"
    "{%- else -%}"
    "{{- (bos_token if bos_token else '') + '[INST] ' -}}"
    "{%- if loop.first and sys -%}{{- '<<SYS>>\\n' + sys + '\\n<</SYS>>\\n\\n' -}}{%- endif -%}"
    "{{- (m.content | trim) + ' [/INST]' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# ChatGLM3: `[gMASK]sop<|role|>\n content`. The model has no end-of-turn text of its own; like
# LLaMA-Factory we close each assistant turn with EOS so the stop is learnt.
CHATGLM3 = (
    "{{- '[gMASK]sop' -}}"
    "{%- if tools -%}"
    "{{- '<|system|>\\nAnswer the following questions as best as you can. "
    "You have access to the following tools:\\n' + (tools | tojson(indent=4)) -}}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- set role = 'observation' if m.role == 'tool' else m.role -%}"
    "{%- if m.role == 'assistant' and m.tool_calls -%}"
    "{%- for tc in m.tool_calls -%}"
    "{%- set f = tc.function if tc.function is defined else tc -%}"
    "{{- '<|assistant|>' + f.name + '\\n' + (f.arguments | tojson) + eos_token -}}"
    "{%- endfor -%}"
    "{%- else -%}"
    "{{- '<|' + role + '|>\\n' + m.content + (eos_token if m.role == 'assistant' else '') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)

ALPACA = (
    "{%- set has_sys = messages and messages[0].role == 'system' -%}"
    f"{{%- set sys = messages[0].content if has_sys else {ALPACA_SYSTEM!r} -%}}"
    "{%- if sys -%}{{- sys + '\\n\\n' -}}{%- endif -%}"
    "{%- set msgs = messages[1:] if has_sys else messages -%}"
    "{%- for m in msgs -%}"
    "{%- if m.role == 'assistant' -%}"
    "{{- '### Response:\\n' + m.content + eos_token + '\\n\\n' -}}"
    "{%- else -%}{{- '### Instruction:\\n' + m.content + '\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '### Response:\\n' -}}{%- endif -%}"
)

DEFAULT = (
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' -%}{{- 'System: ' + m.content + '\\n' -}}"
    "{%- elif m.role == 'assistant' -%}{{- 'Assistant: ' + m.content + eos_token + '\\n' -}}"
    "{%- elif m.role == 'tool' -%}{{- 'Observation: ' + m.content + '\\n' -}}"
    "{%- else -%}{{- 'Human: ' + m.content + '\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Assistant: ' -}}{%- endif -%}"
)

BUILTIN: dict[str, str] = {
    "chatml": _chatml(None),
    "qwen": _chatml(QWEN_SYSTEM),
    "llama3": LLAMA3,
    "llama2": LLAMA2,
    "chatglm3": CHATGLM3,
    "alpaca": ALPACA,
    "default": DEFAULT,
}
"""Built-in template name -> Jinja source."""
