"""A small web chat page (Gradio): streamed replies, thinking folded away, tool calls shown and run.

The page runs the model in-process through the same :class:`~minimind_hf.serve.engine.Engine` as the
HTTP server, so several browser tabs are batched together. Thinking appears as a collapsed
"Thinking" panel above the answer; each tool call as a panel titled with the function name holding its
JSON arguments. Tools can be given as a JSON list (OpenAI format) in the options. With ``run_tools``
(``minimind-hf webui MODEL --run-tools calculator``) the page also runs the calls, as the terminal chat does:
each response appears in a folded "Tool result" panel and the model continues, up to ``max_tool_rounds``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator
from typing import Any

from ..modeling_minimind import GENERATION_DEFAULTS
from ..tools import run_tool_call, tool_schemas
from .chat import Reply, stream_reply
from .engine import Engine, Finish
from .sampling import SamplingParams

logger = logging.getLogger(__name__)

THINKING_TITLE = "Thinking"
CALL_TITLE = "Tool call: "
RESULT_TITLE = "Tool result: "


def _text_of(content: Any) -> str:
    """Gradio history content is a string or a list of parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text") or ""
    if isinstance(content, (list, tuple)):
        return "".join(_text_of(p) for p in content)
    return ""


def _unfence(text: str) -> str:
    """The JSON inside a ```json fenced block (how tool-call arguments are displayed)."""
    return text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()


def history_to_messages(history: list[dict]) -> list[dict]:
    """Gradio's message history -> chat-template messages. Thinking panels are display only and dropped;
    tool-call panels become the assistant's ``tool_calls``, tool-result panels ``tool`` messages."""
    messages: list[dict] = []
    for item in history:
        role = item.get("role")
        meta = item.get("metadata") or {}
        title = meta.get("title") if isinstance(meta, dict) else None
        text = _text_of(item.get("content"))
        if role == "user":
            messages.append({"role": "user", "content": text})
        elif role == "assistant":
            if title == THINKING_TITLE:
                continue
            if title and title.startswith(RESULT_TITLE):
                messages.append({"role": "tool", "content": text})
                continue
            if title and title.startswith(CALL_TITLE):
                call = {
                    "type": "function",
                    "function": {"name": title.removeprefix(CALL_TITLE), "arguments": _unfence(text)},
                }
                if messages and messages[-1]["role"] == "assistant":
                    messages[-1].setdefault("tool_calls", []).append(call)
                else:
                    messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
                continue
            if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("content"):
                messages[-1]["content"] = text
            else:
                messages.append({"role": "assistant", "content": text})
    return messages


def reply_messages(reply: Reply, thinking_done: bool) -> list:
    """The assistant turn as Gradio ChatMessages: folded thinking, tool-call panels, then the answer."""
    import gradio as gr

    out = []
    if reply.reasoning:
        out.append(
            gr.ChatMessage(
                role="assistant",
                content=reply.reasoning,
                metadata={"title": THINKING_TITLE, "status": "done" if thinking_done else "pending"},
            )
        )
    for call in reply.tool_calls or []:
        out.append(
            gr.ChatMessage(
                role="assistant",
                content=f"```json\n{call.arguments}\n```",
                metadata={"title": f"{CALL_TITLE}{call.name}", "id": call.id},
            )
        )
    if reply.content or not out:
        out.append(gr.ChatMessage(role="assistant", content=reply.content))
    return out


def _tool_result(name: str, response: str):
    """A folded panel holding a tool's response."""
    import gradio as gr

    return gr.ChatMessage(
        role="assistant", content=response, metadata={"title": f"{RESULT_TITLE}{name}", "status": "done"}
    )


def _tools_from_json(tools_json: str, run_tools: dict | None) -> list | None:
    """The tools box's JSON list; when the box is empty, the schemas of the tools this page runs."""
    import gradio as gr

    tools = None
    if tools_json and tools_json.strip():
        try:
            tools = json.loads(tools_json)
            assert isinstance(tools, list)
        except (json.JSONDecodeError, AssertionError):
            raise gr.Error("Tools must be a JSON list of OpenAI tool objects") from None
    if tools is None and run_tools:
        tools = tool_schemas(run_tools)
    return tools


def _stream_round(
    engine: Engine, messages: list[dict], params: SamplingParams, tools, thinking: bool, shown: list
) -> Generator[list, None, Reply | None]:
    """Stream one reply of the model as panels after ``shown``. Returns the reply, or None when the
    conversation no longer fits the context after earlier rounds (the panels then say so)."""
    import gradio as gr

    reply = Reply()
    try:
        for item in stream_reply(engine, messages, params, tools, thinking):
            if isinstance(item, Finish):
                reply.finish = item
                break
            reply.add(item)
            yield shown + reply_messages(reply, thinking_done=item.kind != "reasoning")
    except ValueError as exc:  # the conversation no longer fits the model's context
        if not shown:
            raise gr.Error(f"{exc}. Clear the chat to start again.") from None
        yield shown + [gr.ChatMessage(role="assistant", content=f"[stopped: {exc}]")]
        return None
    if reply.finish is not None and reply.finish.reason == "error":
        raise gr.Error(f"generation failed: {reply.finish.error}")
    return reply


def _reply_rounds(
    engine: Engine,
    messages: list[dict],
    params: SamplingParams,
    tools,
    thinking: bool,
    run_tools: dict | None,
    rounds: int,
) -> Iterator[list]:
    """Up to ``rounds`` replies: after each one that calls tools, the calls run (``run_tools``) and their
    responses join the conversation for the next."""
    shown: list = []  # the panels of finished rounds (tool calls, their results)
    for _ in range(rounds):
        reply = yield from _stream_round(engine, messages, params, tools, thinking, shown)
        if reply is None:
            return
        shown += reply_messages(reply, thinking_done=True)
        yield shown
        if not (run_tools and reply.tool_calls):
            return
        messages.append(reply.as_message())
        for call in reply.tool_calls:
            response = run_tool_call(run_tools, call.name, call.arguments)
            messages.append({"role": "tool", "content": response, "tool_call_id": call.id})
            shown.append(_tool_result(call.name, response))
        yield shown


def _option_inputs(engine: Engine, max_tokens: int, temperature: float) -> list:
    """The options under the chat (rendered by ChatInterface): thinking, tools, system prompt, temperature,
    max new tokens."""
    import gradio as gr

    thinking = gr.Checkbox(label="Thinking (reasoning shown folded)", value=False, render=False)
    tools = gr.Textbox(label="Tools (JSON list, OpenAI format)", value="", lines=3, render=False)
    system = gr.Textbox(label="System prompt", value="", render=False)
    temperature_slider = gr.Slider(0.0, 1.5, value=temperature, step=0.05, label="Temperature", render=False)
    longest = max(1, min(max_tokens, engine.context_length - 1))
    max_new = gr.Slider(
        1,
        longest,
        value=min(longest, 512),
        step=1,
        label="Max new tokens",
        render=False,
    )
    return [thinking, tools, system, temperature_slider, max_new]


def build_demo(
    engine: Engine,
    model_name: str = "minimind",
    max_tokens: int = 512,
    temperature: float = GENERATION_DEFAULTS["temperature"],
    top_p: float = GENERATION_DEFAULTS["top_p"],
    run_tools: dict | None = None,
    max_tool_rounds: int = 3,
):
    """The Gradio Blocks app. Its API endpoint ``/chat`` takes
    (message, thinking, tools_json, system, temperature, max_tokens) and streams the reply messages;
    ``temperature`` is the slider's start, ``top_p`` the nucleus for every reply (the model's defaults).
    ``run_tools`` ({name: function}) are offered to the model when the tools box is empty, and their calls
    run here between rounds (errors come back as the tool's response text, never as a failed page)."""
    default_temperature, default_top_p = temperature, top_p
    import gradio as gr

    # ChatInterface passes the history and options positionally: this signature is the page's API
    def respond(
        message: str,
        history: list[dict],
        thinking: bool,
        tools_json: str,
        system: str,
        temperature: float,
        max_new: int,
    ) -> Iterator[list]:
        tools = _tools_from_json(tools_json, run_tools)
        messages = [{"role": "system", "content": system}] if system and system.strip() else []
        messages += history_to_messages(history) + [{"role": "user", "content": message}]
        params = SamplingParams(
            max_new_tokens=int(max_new), temperature=float(temperature), top_p=default_top_p
        )
        rounds = 1 + (max_tool_rounds if run_tools else 0)
        yield from _reply_rounds(engine, messages, params, tools, bool(thinking), run_tools, rounds)

    with gr.Blocks(title=f"MiniMind chat: {model_name}", analytics_enabled=False) as demo:
        gr.Markdown(f"### MiniMind chat: `{model_name}`")
        options = _option_inputs(engine, max_tokens, default_temperature)
        gr.ChatInterface(
            respond,
            chatbot=gr.Chatbot(height=520, label="MiniMind"),
            additional_inputs=options,
            additional_inputs_accordion="Options",  # a label: an Accordion built here would render empty
            api_name="chat",
        )
    return demo


def launch(
    engine: Engine,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_tokens: int = 512,
    block: bool = True,
    temperature: float = GENERATION_DEFAULTS["temperature"],
    top_p: float = GENERATION_DEFAULTS["top_p"],
    run_tools: dict | None = None,
):
    """Serve the page on host:port (loopback by default). Returns the demo (non-blocking when block=False)."""
    demo = build_demo(engine, model_name, max_tokens, temperature, top_p, run_tools=run_tools)
    demo.queue(default_concurrency_limit=16)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
    )
    return demo
