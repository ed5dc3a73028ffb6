"""Incremental parser for MiniMind's generated text: reasoning, content and Hermes tool calls.

The chat template ends the generation prompt in ``<think>\\n`` (thinking on) or in the closed block
``<think>\\n\\n</think>\\n\\n`` (thinking off), so the model generates either

    reasoning...\\n</think>\\n\\nanswer                      (thinking on)
    answer\\n<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>   (tools, thinking off)

:class:`OutputParser` is fed decoded text in arbitrary pieces and returns :class:`Delta` objects:
``reasoning`` text (the inside of the think block), ``content`` text, and complete ``tool_call`` s with
OpenAI ``call_...`` ids. Text that might be the start of a tag (``<``, ``</thi``...) is held back only
until the next piece decides it. Whitespace follows the chat template exactly, so that rendering the
parsed message back through the template reproduces what the model wrote: newlines around the think
block and between content and tool calls are dropped.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Literal

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"


@dataclass
class ToolCall:
    """One parsed call, already in OpenAI's shape (``arguments`` is a JSON string)."""

    index: int
    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class Delta:
    kind: Literal["reasoning", "content", "tool_call"]
    text: str = ""
    tool_call: ToolCall | None = None


def new_tool_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _partial_tag_suffix(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``tags``."""
    best = 0
    for tag in tags:
        for k in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:k]):
                best = k
                break
    return best


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))


def parse_tool_call_body(body: str) -> tuple[str, str] | None:
    """``{"name": ..., "arguments": ...}`` -> (name, arguments JSON string), or None if malformed."""
    try:
        obj = json.loads(body.strip())
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            json.loads(args)
        except json.JSONDecodeError:
            return None
        return obj["name"], args
    if not isinstance(args, dict):
        return None
    return obj["name"], json.dumps(args, ensure_ascii=False)


class OutputParser:
    """Split a stream of generated text into reasoning / content / tool-call deltas.

    Args:
        reasoning: start inside the think block (the prompt ended in ``<think>\\n``).
        parse_tool_calls: turn ``<tool_call>`` blocks into tool calls (only when the request had tools);
            otherwise they stay in the content verbatim.
    """

    def __init__(self, reasoning: bool = False, parse_tool_calls: bool = False):
        self.mode: Literal["reasoning", "content", "tool"] = "reasoning" if reasoning else "content"
        self.parse_tool_calls = parse_tool_calls
        self._buf = ""
        self._at_start = True  # no text emitted yet in the current segment: leading newlines are dropped
        self.tool_calls: list[ToolCall] = []

    # -- public -------------------------------------------------------------------------------------
    def feed(self, text: str) -> list[Delta]:
        self._buf += text
        out: list[Delta] = []
        while self._step(out, final=False):
            pass
        return out

    def finish(self) -> list[Delta]:
        """Flush everything held back (end of generation)."""
        out: list[Delta] = []
        while self._step(out, final=True):
            pass
        if self.mode == "tool":  # unterminated tool call: give it back as text
            self._emit(out, "content", TOOL_OPEN + self._buf)
            self._buf = ""
            self.mode = "content"
        elif self._buf:
            # Only held-back newlines (or a tag prefix) remain; trailing newlines before the end are
            # dropped like the template drops them before <|im_end|>, tag prefixes are real text.
            rest = self._buf.rstrip("\n")
            self._buf = ""
            if rest:
                self._emit(out, self.mode, rest)
        return out

    # -- internals ----------------------------------------------------------------------------------
    def _tags(self) -> tuple[str, ...]:
        if self.mode == "reasoning":
            return (THINK_CLOSE,)
        if self.mode == "tool":
            return (TOOL_CLOSE,)
        return (THINK_OPEN, TOOL_OPEN) if self.parse_tool_calls else (THINK_OPEN,)

    def _emit(self, out: list[Delta], kind: str, text: str) -> None:
        if self._at_start:
            text = text.lstrip("\n")
        if not text:
            return
        self._at_start = False
        if out and out[-1].kind == kind and kind != "tool_call":
            out[-1].text += text
        else:
            out.append(Delta(kind, text))  # type: ignore[arg-type]

    def _switch(self, mode: str) -> None:
        self.mode = mode  # type: ignore[assignment]
        self._at_start = True

    def _step(self, out: list[Delta], final: bool) -> bool:
        """Consume as much of the buffer as can be decided; True if a tag was consumed (loop again)."""
        buf = self._buf
        tags = self._tags()
        hits = [(buf.find(t), t) for t in tags if t in buf]
        if hits:
            pos, tag = min(hits)
            before, self._buf = buf[:pos], buf[pos + len(tag) :]
            if self.mode == "tool":
                self._close_tool_call(out, before)
                self._switch("content")
            else:
                # Newlines right before a tag belong to the template, not to the text.
                self._emit(out, self.mode, before.rstrip("\n"))
                self._switch({THINK_OPEN: "reasoning", THINK_CLOSE: "content", TOOL_OPEN: "tool"}[tag])
            return True
        if self.mode == "tool" or final:
            return False  # a tool call is emitted whole; at the end finish() flushes the rest
        hold = _partial_tag_suffix(buf, tags)
        head = buf[: len(buf) - hold]
        hold += _trailing_newlines(head)  # newlines might precede a tag: decide later
        emit, self._buf = buf[: len(buf) - hold], buf[len(buf) - hold :]
        self._emit(out, self.mode, emit)
        return False

    def _close_tool_call(self, out: list[Delta], body: str) -> None:
        parsed = parse_tool_call_body(body)
        if parsed is None:  # not a valid call: keep the model's text visible as content
            self.mode = "content"
            self._emit(out, "content", TOOL_OPEN + body + TOOL_CLOSE)
            return
        call = ToolCall(
            index=len(self.tool_calls), id=new_tool_call_id(), name=parsed[0], arguments=parsed[1]
        )
        self.tool_calls.append(call)
        out.append(Delta("tool_call", tool_call=call))
        self._at_start = False


def parse_output(text: str, reasoning: bool = False, parse_tool_calls: bool = False) -> dict:
    """Parse a complete generation: ``{"reasoning_content", "content", "tool_calls"}``."""
    parser = OutputParser(reasoning=reasoning, parse_tool_calls=parse_tool_calls)
    deltas = parser.feed(text) + parser.finish()
    return {
        "reasoning_content": "".join(d.text for d in deltas if d.kind == "reasoning"),
        "content": "".join(d.text for d in deltas if d.kind == "content"),
        "tool_calls": [d.tool_call for d in deltas if d.kind == "tool_call"],
    }
