"""The request side of tool calling: `tools`, `tool_choice`, and messages that carry calls and
their results, checked and put in the shape chat templates render (Hugging Face's)."""

from __future__ import annotations

import json
from typing import Any

from danlu.infer.openai_api import ApiError


def request_tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, str | bool]:
    """(the tools to render into the prompt, or None: none given, or tool_choice "none"; and
    what the choice forces: False (the model decides), True (`required`: some call) or the
    name of the function it must call)."""
    tools = body.get("tools")
    if tools is None and body.get("functions") is not None:  # the legacy form
        tools = [{"type": "function", "function": f} for f in _list(body["functions"], "functions")]
    if tools is None:
        return None, False
    checked = [_tool(t, f"tools[{i}]") for i, t in enumerate(_list(tools, "tools"))]
    choice = body.get("tool_choice", body.get("function_call", "auto"))
    if choice == "none" or not checked:
        return None, False
    if choice == "auto":
        return checked, False
    if choice == "required":
        return checked, True
    named = choice.get("function", choice) if isinstance(choice, dict) else None
    name = named.get("name") if isinstance(named, dict) else None
    if name not in names(checked):
        raise ApiError(
            400,
            'tool_choice must be "auto", "none", "required" or {"type": "function", '
            '"function": {"name": NAME}} naming one of the tools',
            param="tool_choice",
        )
    return checked, name


def _list(value: Any, param: str) -> list:
    if not isinstance(value, list):
        raise ApiError(400, f"{param} must be an array", param=param)
    return value


def _tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise ApiError(
            400, f'{where} must be {{"type": "function", "function": {{...}}}}', param=where
        )
    fn = tool.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ApiError(400, f"{where}.function.name must be a non-empty string", param=where)
    params = fn.get("parameters", {})
    if not isinstance(params, dict):
        raise ApiError(
            400, f"{where}.function.parameters must be a JSON Schema object", param=where
        )
    return {"type": "function", "function": fn}


def names(tools: list[dict[str, Any]] | None) -> frozenset[str]:
    return frozenset(t["function"]["name"] for t in tools or [])


def calls_of(msg: dict[str, Any], where: str) -> list[dict[str, Any]] | None:
    """An assistant message's `tool_calls`, arguments decoded (templates render them as JSON)."""
    raw = msg.get("tool_calls")
    if raw is None:
        return None
    out = []
    for i, call in enumerate(_list(raw, f"{where}.tool_calls")):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ApiError(400, f"{where}.tool_calls[{i}].function.name must be a string",
                           param=f"{where}.tool_calls")  # fmt: skip
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as exc:
                raise ApiError(400, f"{where}.tool_calls[{i}].function.arguments is not JSON ({exc.msg})",
                               param=f"{where}.tool_calls") from exc  # fmt: skip
        out.append({"id": call.get("id"), "type": "function",
                    "function": {"name": fn["name"], "arguments": args}})  # fmt: skip
    return out
