"""Validation and normalisation of chat messages, tool specs and tool calls.

Every conversation leaves here in one uniform shape, so `datasets` can store it in a typed column
and a chat template can render it with ``apply_chat_template(messages, tools=tools)``::

    {"role": "system" | "user" | "assistant" | "tool",
     "content": str,                       # "" for an assistant turn that only calls tools
     "reasoning_content": str | None,      # assistant turns only; None when absent
     "tool_calls": [{"type": "function",
                     "function": {"name": str, "arguments": dict}}] | None}   # assistant only

MiniMind stores `tools` and `tool_calls` as JSON *strings* inside messages; both strings and
already-parsed lists are accepted. A message's `tools` are moved out of the message and returned
separately (chat templates take tools as an argument, not per message). Tool specs are kept exactly
as given, after checking they are function specs (``{"type": "function", "function": {...}}`` or a
bare ``{"name", "description", "parameters"}``), because templates render them verbatim with
``tojson`` and rewrapping would change the training text. Tool calls are rewritten to the OpenAI
form above with `arguments` parsed to a dict; both templates in this project render either form
identically.

Input message keys other than role/content/reasoning_content/tools/tool_calls are rejected, except
OpenAI metadata that no template here renders (``name``, ``tool_call_id``, ``id``) and keys whose
value is null (parquet files give every message every column), which are dropped.

Text the template renders (content, reasoning_content, tool calls, tool specs) must not contain the
ChatML turn delimiters `CONTROL_TOKENS`: the tokenizer reads them as the real special tokens, so the
text would forge turns (wrong roles, wrong loss mask). Pretrain ``text`` is not checked here: the
original MiniMind pretrain corpus legitimately contains them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NoReturn

from .errors import RecordError

__all__ = [
    "CONTROL_TOKENS",
    "MESSAGE_KEYS",
    "ROLES",
    "check_no_control_tokens",
    "fail",
    "is_empty_assistant",
    "iter_strings",
    "merge_tools",
    "normalise_conversation",
    "normalise_tool_calls",
    "normalise_tools",
]

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = ("role", "content", "reasoning_content", "tool_calls")
_ACCEPTED_KEYS = frozenset(MESSAGE_KEYS) | {"tools"}
_IGNORED_KEYS = frozenset({"name", "tool_call_id", "id"})
# The chat template's turn delimiters: `minimind_hf.tokenizer.special_tokens` BOS/EOS, spelled out
# because importing them would be a cycle (the tokenizer package reads data through this package).
CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>")


def fail(field: str | None, message: str, reason: str) -> NoReturn:
    """Raise a `RecordError` without location; the loader adds file and line."""
    raise RecordError(None, None, field, message, reason=reason)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _parse_json(value: str, field: str, reason: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as e:
        fail(field, f"not valid JSON ({e})", reason)


def iter_strings(value: Any, field: str) -> Iterator[tuple[str, str]]:
    """Every string inside a JSON value, dict keys included, as ``(field path, string)`` in document order.

    Iterative, so a deeply nested value cannot exhaust the Python stack."""
    stack = [(field, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str):
                    yield where, key
                children.append((where, child))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{path}[{i}]", child) for i, child in enumerate(item)]))


def check_no_control_tokens(value: Any, field: str) -> None:
    """Refuse `CONTROL_TOKENS` anywhere in `value` (a string, or JSON the template renders)."""
    for where, text in iter_strings(value, field):
        found = [(text.find(token), token) for token in CONTROL_TOKENS if token in text]
        if found:
            fail(
                where,
                f"contains the chat-template control token {min(found)[1]!r}: the tokenizer reads it as a "
                "real turn boundary, so this text would forge turns (wrong roles and loss mask); remove it",
                "control_token",
            )


# --------------------------------------------------------------------------------------- tools
def normalise_tools(value: Any, field: str) -> list[dict]:
    """Parse and check a tool list (JSON string, list, or a single spec); ``[]`` if there is none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        value = _parse_json(value, field, "bad_tools")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        fail(field, f"tools must be a list of function specs, got {_type_name(value)}", "bad_tools")
    tools = []
    for j, tool in enumerate(value):
        if isinstance(tool, str):  # parquet/Json columns store each spec as a JSON string
            tool = _parse_json(tool, f"{field}[{j}]", "bad_tools")
        tools.append(_check_tool(tool, f"{field}[{j}]"))
    check_no_control_tokens(tools, field)  # specs are rendered verbatim into the system turn
    return tools


def _check_tool(tool: Any, field: str) -> dict:
    if not isinstance(tool, dict):
        fail(field, f"a tool must be a JSON object, got {_type_name(tool)}", "bad_tools")
    fn = tool
    if "function" in tool:
        fn = tool["function"]
        if tool.get("type", "function") != "function":
            fail(
                f"{field}.type", f"unsupported tool type {tool['type']!r} (expected 'function')", "bad_tools"
            )
        if not isinstance(fn, dict):
            fail(f"{field}.function", f"must be an object, got {_type_name(fn)}", "bad_tools")
    if not isinstance(fn.get("name"), str) or not fn["name"].strip():
        fail(
            field,
            "a tool needs a non-empty 'name' (OpenAI function spec: "
            '{"type": "function", "function": {"name", "description", "parameters"}})',
            "bad_tools",
        )
    if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
        fail(
            field,
            f"tool 'parameters' must be a JSON-schema object, got {_type_name(fn['parameters'])}",
            "bad_tools",
        )
    if fn.get("description") is not None and not isinstance(fn["description"], str):
        fail(field, "tool 'description' must be a string", "bad_tools")
    return tool


def _tool_name(tool: dict) -> str:
    return (tool["function"] if "function" in tool else tool)["name"]


def merge_tools(groups: list[tuple[list[dict], str]]) -> list[dict] | None:
    """Merge tool lists found in several places of one record; ``None`` when there are no tools.

    The same tool given twice (e.g. on chosen and rejected) is kept once; two different specs
    under one name are an error, since the model could not tell which one it was shown.
    """
    merged: dict[str, dict] = {}
    for tools, field in groups:
        for tool in tools:
            name = _tool_name(tool)
            if name in merged and merged[name] != tool:
                fail(field, f"tool {name!r} is defined twice with different specs", "bad_tools")
            merged.setdefault(name, tool)
    return list(merged.values()) or None


# ---------------------------------------------------------------------------------- tool calls
def normalise_tool_calls(value: Any, field: str) -> list[dict] | None:
    """Parse tool calls to ``[{"type": "function", "function": {"name", "arguments": dict}}]``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        value = _parse_json(value, field, "bad_tool_calls")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        fail(field, f"tool_calls must be a list of calls, got {_type_name(value)}", "bad_tool_calls")
    calls = [_normalise_call(call, f"{field}[{j}]") for j, call in enumerate(value)]
    for j, call in enumerate(calls):  # rendered with tojson, which leaves '<|' as is
        check_no_control_tokens(call["function"], f"{field}[{j}]")
    return calls or None


def _normalise_call(call: Any, field: str) -> dict:
    if isinstance(call, str):
        call = _parse_json(call, field, "bad_tool_calls")
    if not isinstance(call, dict):
        fail(field, f"a tool call must be a JSON object, got {_type_name(call)}", "bad_tool_calls")
    fn = call
    if "function" in call:
        fn = call["function"]
        if call.get("type", "function") != "function":
            fail(
                f"{field}.type",
                f"unsupported tool call type {call['type']!r} (expected 'function')",
                "bad_tool_calls",
            )
        if not isinstance(fn, dict):
            fail(f"{field}.function", f"must be an object, got {_type_name(fn)}", "bad_tool_calls")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        fail(
            field,
            'a tool call needs a non-empty "name" ({"name": ..., "arguments": {...}})',
            "bad_tool_calls",
        )
    args = fn.get("arguments")
    if args is None or (isinstance(args, str) and not args.strip()):
        args = {}
    elif isinstance(args, str):
        args = _parse_json(args, f"{field}.arguments", "bad_tool_calls")
    if not isinstance(args, dict):
        fail(
            f"{field}.arguments", f"arguments must be a JSON object, got {_type_name(args)}", "bad_tool_calls"
        )
    return {"type": "function", "function": {"name": name, "arguments": args}}


# ------------------------------------------------------------------------------------ messages
def normalise_conversation(value: Any, field: str) -> tuple[list[dict], list[dict]]:
    """Check a list of messages; return them in the uniform schema plus the tools they carried.

    Checks: a non-empty list of objects; known roles; a system message only as the first turn;
    string content (null only for an assistant turn with tool_calls); reasoning_content and
    tool_calls only on assistant turns. Role *order* beyond that is left to the caller.
    """
    if not isinstance(value, list):
        fail(field, f"expected a list of messages, got {_type_name(value)}", "wrong_type")
    if not value:
        fail(field, "conversation is empty (need at least one message)", "empty_conversation")
    messages, tools = [], []
    for i, msg in enumerate(value):
        where = f"{field}[{i}]"
        message, msg_tools = _normalise_message(msg, where)
        if message["role"] == "system" and i > 0:
            fail(f"{where}.role", "a system message is only allowed as the first turn", "misplaced_system")
        messages.append(message)
        tools.extend(msg_tools)
    return messages, tools


def _normalise_message(msg: Any, field: str) -> tuple[dict, list[dict]]:
    if not isinstance(msg, dict):
        fail(
            field,
            f"a message must be an object with 'role' and 'content', got {_type_name(msg)}",
            "wrong_type",
        )
    for key, val in msg.items():
        if key not in _ACCEPTED_KEYS and key not in _IGNORED_KEYS and val is not None:
            hint = (
                " (ShareGPT 'from'/'value' is not supported: convert to 'role'/'content')"
                if key in ("from", "value")
                else ""
            )
            fail(
                f"{field}.{key}",
                f"unknown message key {key!r}{hint} (allowed: {', '.join(sorted(_ACCEPTED_KEYS))})",
                "unknown_key",
            )
    role = msg.get("role")
    if role is None:
        fail(f"{field}.role", "missing 'role'", "missing_field")
    if role not in ROLES:
        fail(f"{field}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})", "unknown_role")

    tool_calls = normalise_tool_calls(msg.get("tool_calls"), f"{field}.tool_calls")
    if tool_calls and role != "assistant":
        fail(
            f"{field}.tool_calls",
            f"only assistant turns can have tool_calls (this is a {role} turn)",
            "bad_tool_calls",
        )

    content = msg.get("content")
    if content is None:
        if not (role == "assistant" and tool_calls):
            missing = "content" not in msg
            fail(
                f"{field}.content",
                "missing 'content'"
                if missing
                else "content is null; only an assistant turn with tool_calls may have no content",
                "missing_field" if missing else "wrong_type",
            )
        content = ""
    elif not isinstance(content, str):
        fail(
            f"{field}.content",
            f"content must be a string, got {_type_name(content)}"
            " (multimodal content lists are not supported)",
            "wrong_type",
        )

    reasoning = msg.get("reasoning_content")
    if reasoning is not None and not isinstance(reasoning, str):
        fail(f"{field}.reasoning_content", f"must be a string, got {_type_name(reasoning)}", "wrong_type")
    if reasoning is not None and role != "assistant":
        if reasoning.strip():
            fail(
                f"{field}.reasoning_content",
                f"only assistant turns can have reasoning_content (this is a {role} turn)",
                "bad_reasoning",
            )
        reasoning = None  # an empty value on another role carries nothing

    check_no_control_tokens(content, f"{field}.content")
    if reasoning is not None:
        check_no_control_tokens(reasoning, f"{field}.reasoning_content")
    tools = normalise_tools(msg.get("tools"), f"{field}.tools")
    message = {"role": role, "content": content, "reasoning_content": reasoning, "tool_calls": tool_calls}
    return message, tools


def is_empty_assistant(message: dict) -> bool:
    """True for an assistant turn with nothing in it (MiniMind's RL prompt placeholder)."""
    return (
        message["role"] == "assistant"
        and not message["content"].strip()
        and not message["tool_calls"]
        and not (message["reasoning_content"] or "").strip()
    )
