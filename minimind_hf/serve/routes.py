"""The HTTP API's routes: ``/health``, ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions``,
with the API-key check every route depends on. Handlers read the app's
:class:`~minimind_hf.serve.state.ServerState` from the request."""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from .engine import EngineOverloaded
from .prepare import EngineRequest, prepare_chat, prepare_text
from .responses import Choice, chat_response, chat_sse, text_response, text_sse
from .schemas import APIError, ChatCompletionRequest, CompletionRequest
from .state import ServerState, server_state

logger = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.25  # how often a non-streamed request checks that its client is still there


async def check_api_key(request: Request) -> None:
    api_key = server_state(request).api_key
    if api_key is None or request.url.path == "/health":  # load balancers probe without credentials
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(
            401,
            "Incorrect API key provided. Pass it as 'Authorization: Bearer KEY'.",
            code="invalid_api_key",
        )


async def health(request: Request) -> dict:
    return {"status": "ok", "pending": server_state(request).engine.pending}


async def list_models(request: Request) -> dict:
    state = server_state(request)
    return {"object": "list", "data": [state.model_card(name) for name in state.names]}


async def get_model(model_id: str, request: Request) -> dict:
    state = server_state(request)
    if model_id not in state.names:
        raise APIError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
    return state.model_card(model_id)


def open_streams(state: ServerState, requests: list[EngineRequest]) -> list[Choice]:
    """Submit every choice to the engine, or none of them (503 when it is closing or full)."""
    engine = state.engine
    if engine.closing:
        raise APIError(503, "The server is shutting down.", type="server_error", code="shutting_down")
    choices: list[Choice] = []
    group = object()  # the choices of one request: prompts they share are prefilled once
    try:
        for i, r in enumerate(requests):
            events = engine.stream(r.ids, r.params, r.constraint, group)
            choices.append(Choice(i, events, r.parser, want_logprobs=r.params.logprobs is not None))
    except EngineOverloaded as exc:
        for choice in choices:
            choice.events.cancel()
        raise APIError(
            503,
            f"The server is overloaded ({exc}); retry shortly.",
            type="server_error",
            code="overloaded",
            headers={"Retry-After": "1"},
        ) from exc
    return choices


async def off_loop(state: ServerState, fn, req):
    """``fn(state, req)`` on the render thread: rendering and tokenising never block the event loop."""
    return await asyncio.get_running_loop().run_in_executor(state.render_pool, fn, state, req)


def sse(body) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def unless_disconnected(request: Request, work):
    """Run ``work``; cancel it (and so its generation) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                logger.info("client went away: cancelling its request")
                task.cancel()
                raise APIError(499, "client closed the request", code="client_closed_request")
    finally:
        if not task.done():
            task.cancel()


async def chat_completions(req: ChatCompletionRequest, request: Request):
    state = server_state(request)
    choices = open_streams(state, await off_loop(state, prepare_chat, req))
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return sse(chat_sse(choices, completion_id, req.model, include_usage, state.token_text))
    return await unless_disconnected(
        request, chat_response(choices, completion_id, req.model, state.token_text)
    )


async def completions(req: CompletionRequest, request: Request):
    state = server_state(request)
    echo = req.prompt if req.echo and isinstance(req.prompt, str) else None
    if req.echo and echo is None:  # refused before any work is queued
        raise APIError(400, "echo is supported for a single text prompt", param="echo")
    choices = open_streams(state, await off_loop(state, prepare_text, req))
    completion_id = "cmpl-" + uuid.uuid4().hex
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return sse(text_sse(choices, completion_id, req.model, include_usage, state.token_text, echo))
    return await unless_disconnected(
        request, text_response(choices, completion_id, req.model, state.token_text, echo)
    )


def add_routes(app: FastAPI) -> None:
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"])
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/v1/completions", completions, methods=["POST"])
