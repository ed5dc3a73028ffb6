"""Terminal chat: streamed replies, conversation history, ``/think`` toggle, ``/reset``.

The loop reads lines through ``read_line`` and writes through ``write``, so it runs the same on a real
terminal (``input`` / ``sys.stdout``) and in tests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from ..modeling_minimind import GENERATION_DEFAULTS
from ..tools import run_tool_call, tool_schemas
from .chat import Reply, stream_reply
from .engine import Engine, Finish
from .sampling import SamplingParams

HELP = """commands:
  /think   toggle thinking (reasoning shown dimmed before the answer)
  /reset   forget the conversation
  /help    this help
  /exit    quit (or Ctrl-D)"""


@dataclass
class ChatSettings:
    max_tokens: int = 512
    # MiniMind's defaults; the chat command passes the model's generation_config instead
    temperature: float = GENERATION_DEFAULTS["temperature"]
    top_p: float = GENERATION_DEFAULTS["top_p"]
    seed: int | None = None
    system: str | None = None
    tools: list[dict] | None = None
    thinking: bool = False
    color: bool = False
    history: list[dict] = field(default_factory=list)
    run_tools: dict | None = None  # {name: function}: calls to these run here, and the model continues
    max_tool_rounds: int = 3  # tool rounds per user message at most


class _Style:
    def __init__(self, color: bool):
        self.dim = "\033[2m" if color else ""
        self.bold = "\033[1m" if color else ""
        self.reset = "\033[0m" if color else ""


def _reply(engine: Engine, settings: ChatSettings, history: list[dict], style: _Style, write) -> Reply | None:
    """Stream one assistant reply to `write`; None when generation failed."""
    messages = ([{"role": "system", "content": settings.system}] if settings.system else []) + history
    params = SamplingParams(
        max_new_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed,
    )
    tools = settings.tools
    if tools is None and settings.run_tools:
        tools = tool_schemas(settings.run_tools)
    reply = Reply()
    section = None
    write(f"{style.bold}minimind>{style.reset} ")
    try:
        for item in stream_reply(engine, messages, params, tools, settings.thinking):
            if isinstance(item, Finish):
                reply.finish = item
                break
            reply.add(item)
            if item.kind == "reasoning":
                if section != "reasoning":
                    write(f"{style.dim}[thinking] ")
                write(item.text)
            elif item.kind == "content":
                if section == "reasoning":
                    write(f"{style.reset}\n")
                write(item.text)
            else:
                call = item.tool_call
                write(f"{style.reset}\n[tool call {call.name}({call.arguments}) id={call.id}]")
            section = item.kind
    except KeyboardInterrupt:
        write(" [interrupted]")
    except ValueError as exc:  # the conversation no longer fits the model's context
        write(f"{style.reset}\n[error: {exc}; /reset to start again]\n")
        return None
    write(f"{style.reset}\n")
    if reply.finish is not None and reply.finish.reason == "length":
        write("[reply cut at --max-tokens]\n")
    if reply.finish is not None and reply.finish.reason == "error":
        write(f"[error: {reply.finish.error}]\n")
        return None
    return reply


def run_chat(
    engine: Engine,
    settings: ChatSettings,
    read_line: Callable[[str], str] = input,
    write: Callable[[str], None] | None = None,
) -> list[dict]:
    """Run the chat until ``/exit`` or end of input; returns the final history."""
    if write is None:

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

    style = _Style(settings.color)
    history = settings.history
    write(f"MiniMind chat. Thinking is {'on' if settings.thinking else 'off'}. /help for commands.\n")
    while True:
        try:
            line = read_line(f"{style.bold}you>{style.reset} ")
        except (EOFError, KeyboardInterrupt):
            write("\n")
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            command = line.split()[0].lower()
            if command in ("/exit", "/quit"):
                break
            if command == "/think":
                settings.thinking = not settings.thinking
                write(f"[thinking {'on' if settings.thinking else 'off'}]\n")
            elif command == "/reset":
                history.clear()
                write("[conversation reset]\n")
            elif command == "/help":
                write(HELP + "\n")
            else:
                write(f"unknown command {command}; /help lists them\n")
            continue
        history.append({"role": "user", "content": line})
        for round_ in range(1 + (settings.max_tool_rounds if settings.run_tools else 0)):
            reply = _reply(engine, settings, history, style, write)
            if reply is None:  # an error: a first reply's user message is dropped, tool rounds are kept
                if round_ == 0:
                    history.pop()
                break
            history.append(reply.as_message())
            if not (settings.run_tools and reply.tool_calls):
                break
            for call in reply.tool_calls:  # run the calls here, show them, and let the model continue
                response = run_tool_call(settings.run_tools, call.name, call.arguments)
                write(f"{style.dim}[tool {call.name} -> {response}]{style.reset}\n")
                history.append({"role": "tool", "content": response, "tool_call_id": call.id})
    return history
