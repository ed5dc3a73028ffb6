"""OpenAI response bodies built from the engine's event streams: chat completions and (legacy) text
completions, whole or as Server-Sent Events, with ``n`` choices and ``logprobs``.

Each choice is one engine request (its own seed and grammar). Their events are merged as they come; a
streamed chunk carries one choice's delta, with the log-probabilities of the tokens that produced it. A
choice that fails (a generation error, or the server shutting down) ends the whole response with an
error: the event ``data: {"error": ...}`` when streaming, the matching status otherwise.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from .engine import Event, EventStream, Finish, TokenLogprob
from .parser import OutputParser
from .schemas import APIError


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE stores tokens in it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


_BYTE_OF_CHAR = {c: b for b, c in _bytes_to_unicode().items()}


class TokenText:
    """A token's text and exact bytes for logprobs entries. A byte-level token may be part of a character;
    its text is then OpenAI's ``bytes:\\xe5\\x8f`` form, so different tokens never share a text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token: int) -> tuple[str, list[int]]:
        if token not in self._cache:
            piece = self.tokenizer.convert_ids_to_tokens(token)
            if (
                piece is not None
                and token not in self.tokenizer.added_tokens_decoder
                and all(c in _BYTE_OF_CHAR for c in piece)
            ):
                raw = bytes(_BYTE_OF_CHAR[c] for c in piece)
            else:
                raw = self.tokenizer.decode([token]).encode("utf-8")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            self._cache[token] = (text, list(raw))
        return self._cache[token]

    def chat_entry(self, lp: TokenLogprob) -> dict:
        text, raw = self(lp.token)
        entry = {"token": text, "logprob": lp.logprob, "bytes": raw, "top_logprobs": []}
        for token, logprob in lp.top:
            alt_text, alt_raw = self(token)
            entry["top_logprobs"].append({"token": alt_text, "logprob": logprob, "bytes": alt_raw})
        return entry


@dataclass
class Choice:
    """One choice of a response: its engine request and what is assembled from it."""

    index: int
    events: EventStream
    parser: OutputParser | None = None  # chat: reasoning / content / tool calls; None: raw text
    want_logprobs: bool = False
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet sent (streaming)
    finish: Finish | None = None


async def merged(choices: list[Choice]) -> AsyncIterator[tuple[Choice, Event]]:
    """The choices' events, in arrival order; every request is cancelled if the consumer stops early."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(choice: Choice) -> None:
        async for event in choice.events:
            await queue.put((choice, event))

    tasks = [asyncio.ensure_future(pump(c)) for c in choices]
    try:
        for _ in range(len(choices)):
            while True:
                choice, event = await queue.get()
                yield choice, event
                if isinstance(event, Finish):
                    break
    finally:
        for task in tasks:
            task.cancel()
        for choice in choices:
            await choice.events.aclose()


def usage(choices: list[Choice]) -> dict:
    prompt = choices[0].finish.prompt_tokens
    completion = sum(c.finish.completion_tokens for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(finish: Finish, parser: OutputParser | None) -> str:
    if finish.reason == "error":
        raise APIError(500, f"generation failed: {finish.error}", type="server_error")
    if finish.reason == "cancelled":  # the engine stopped it: the server is shutting down
        raise APIError(
            503, "The request was cancelled: the server is shutting down.", type="server_error",
            code="shutting_down",
        )  # fmt: skip
    if parser is not None and parser.tool_calls:
        return "tool_calls"
    return "length" if finish.reason == "length" else "stop"


def _sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


# -- chat completions ---------------------------------------------------------------------------------
async def chat_response(choices: list[Choice], completion_id: str, model: str, token_text: TokenText) -> dict:
    parts = {c.index: {"reasoning": [], "content": [], "logprobs": []} for c in choices}
    async for choice, event in merged(choices):
        if isinstance(event, TokenLogprob):
            parts[choice.index]["logprobs"].append(token_text.chat_entry(event))
            continue
        deltas = choice.parser.finish() if isinstance(event, Finish) else choice.parser.feed(event)
        for d in deltas:
            if d.kind in ("reasoning", "content"):
                parts[choice.index][d.kind].append(d.text)
        if isinstance(event, Finish):
            choice.finish = event
    out = []
    for choice in choices:
        got = parts[choice.index]
        message: dict = {"role": "assistant", "content": "".join(got["content"]) or None}
        if got["reasoning"]:  # both names: vLLM's current `reasoning` and the older `reasoning_content`
            message["reasoning"] = message["reasoning_content"] = "".join(got["reasoning"])
        if choice.parser.tool_calls:
            message["tool_calls"] = [c.to_openai() for c in choice.parser.tool_calls]
        elif message["content"] is None:
            message["content"] = ""
        out.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": {"content": got["logprobs"]} if choice.want_logprobs else None,
                "finish_reason": finish_reason(choice.finish, choice.parser),
            }
        )
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": out,
        "usage": usage(choices),
    }


async def chat_sse(
    choices: list[Choice], completion_id: str, model: str, include_usage: bool, token_text: TokenText
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(choice: Choice | None, delta: dict, reason: str | None = None, usage_body: dict | None = None):
        body: dict = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        body["choices"] = []
        if choice is not None:
            logprobs = None
            if choice.want_logprobs:
                logprobs = {"content": [token_text.chat_entry(lp) for lp in choice.logprobs]}
                choice.logprobs = []
            body["choices"] = [
                {"index": choice.index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
            ]
        if include_usage:
            body["usage"] = usage_body
        return _sse(body)

    for choice in choices:
        yield chunk(choice, {"role": "assistant", "content": ""})
    async for choice, event in merged(choices):
        if isinstance(event, TokenLogprob):
            choice.logprobs.append(event)
            continue
        deltas = choice.parser.finish() if isinstance(event, Finish) else choice.parser.feed(event)
        for d in deltas:
            if d.kind == "reasoning":
                yield chunk(choice, {"reasoning": d.text, "reasoning_content": d.text})
            elif d.kind == "content":
                yield chunk(choice, {"content": d.text})
            else:
                call = d.tool_call
                yield chunk(choice, {"tool_calls": [{"index": call.index, **call.to_openai()}]})
        if isinstance(event, Finish):
            choice.finish = event
            try:
                reason = finish_reason(event, choice.parser)
            except APIError as exc:
                yield _sse(exc.body())
                return  # merged() cancels the other choices
            yield chunk(choice, {}, reason=reason)
    if include_usage:
        yield chunk(None, {}, usage_body=usage(choices))
    yield "data: [DONE]\n\n"


# -- text completions ---------------------------------------------------------------------------------
def _text_logprobs(entries: list[TokenLogprob], token_text: TokenText, offset: int) -> dict:
    """The legacy completions format: parallel lists, ``top_logprobs`` as {token: logprob}."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    for lp in entries:
        text, _ = token_text(lp.token)
        tokens.append(text)
        token_logprobs.append(lp.logprob)
        top.append({token_text(t)[0]: v for t, v in lp.top})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


async def text_response(
    choices: list[Choice], completion_id: str, model: str, token_text: TokenText, echo: str | None
) -> dict:
    texts = {c.index: [echo or ""] for c in choices}
    entries: dict[int, list[TokenLogprob]] = {c.index: [] for c in choices}
    async for choice, event in merged(choices):
        if isinstance(event, TokenLogprob):
            entries[choice.index].append(event)
        elif isinstance(event, Finish):
            choice.finish = event
        else:
            texts[choice.index].append(event)
    out = []
    for choice in choices:
        logprobs = None
        if choice.want_logprobs:
            logprobs = _text_logprobs(entries[choice.index], token_text, len(echo or ""))
        out.append(
            {
                "index": choice.index,
                "text": "".join(texts[choice.index]),
                "logprobs": logprobs,
                "finish_reason": finish_reason(choice.finish, None),
            }
        )
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": out,
        "usage": usage(choices),
    }


async def text_sse(
    choices: list[Choice], completion_id: str, model: str, include_usage: bool, token_text: TokenText,
    echo: str | None,
) -> AsyncIterator[str]:  # fmt: skip
    created = int(time.time())
    offsets = {c.index: 0 for c in choices}  # characters of this choice's text sent so far

    def chunk(choice: Choice | None, text: str, reason: str | None = None, usage_body: dict | None = None):
        body: dict = {"id": completion_id, "object": "text_completion", "created": created, "model": model}
        body["choices"] = []
        if choice is not None:
            logprobs = None
            if choice.want_logprobs:
                logprobs = _text_logprobs(choice.logprobs, token_text, offsets[choice.index])
                choice.logprobs = []
            offsets[choice.index] += len(text)
            body["choices"] = [
                {"index": choice.index, "text": text, "logprobs": logprobs, "finish_reason": reason}
            ]
        if include_usage:
            body["usage"] = usage_body
        return _sse(body)

    if echo:
        for choice in choices:
            yield chunk(choice, echo)
    async for choice, event in merged(choices):
        if isinstance(event, TokenLogprob):
            choice.logprobs.append(event)
        elif isinstance(event, Finish):
            choice.finish = event
            try:
                reason = finish_reason(event, None)
            except APIError as exc:
                yield _sse(exc.body())
                return
            yield chunk(choice, "", reason=reason)
        else:
            yield chunk(choice, event)
    if include_usage:
        yield chunk(None, "", usage_body=usage(choices))
    yield "data: [DONE]\n\n"
