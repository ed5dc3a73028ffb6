"""The OpenAI-compatible HTTP API (FastAPI): ``/v1/models``, ``/v1/chat/completions`` and the legacy
``/v1/completions`` (raw prompts, no chat template), with ``n`` choices and ``logprobs``.

Streaming answers are Server-Sent Events (``data: {chunk}\\n\\n`` ... ``data: [DONE]\\n\\n``). Every error,
including malformed JSON and unknown routes, is answered with OpenAI's error body
``{"error": {"message", "type", "param", "code"}}``. With an API key configured, every request must send
``Authorization: Bearer KEY``.

Nothing slow runs on the event loop: a body over ``max_body_bytes`` is refused (413) as soon as its
``Content-Length`` or its bytes say so; a conversation too long for the context by its bytes alone is
refused before it is rendered; rendering and tokenising run on one worker thread. A non-streamed request
whose client goes away is cancelled like a streamed one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from jinja2 import TemplateError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .chat import _TOKENIZER_LOCK, encode_chat_prompt, prompt_opens_thinking
from .constrained import GrammarCompiler, GrammarError, build_grammar
from .engine import Engine, EngineOverloaded
from .parser import OutputParser
from .responses import Choice, TokenText, chat_response, chat_sse, text_response, text_sse
from .sampling import SamplingParams
from .schemas import APIError, ChatCompletionRequest, CompletionRequest, SamplingRequest, error_body

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
GRACEFUL_SHUTDOWN_S = 5  # after SIGTERM / Ctrl-C, at most this long for open connections to close
DISCONNECT_POLL_S = 0.25  # how often a non-streamed request checks that its client is still there


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, by their ``Content-Length`` before
    anything is read, or (for chunked uploads) as soon as the bytes received pass the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                return await _send_error(send, 400, "invalid Content-Length header", None)
            if too_large:
                return await _send_error(send, 413, self.message(int(declared)), "request_too_large")
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.message(received))
            return message

        await self.app(scope, limited_receive, send)

    def message(self, size: int) -> str:
        return f"The request body ({size} bytes or more) is larger than this server's limit of {self.max_bytes} bytes."


async def _send_error(send, status: int, message: str, code: str | None) -> None:
    body = json.dumps(error_body(message, param=None, code=code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"connection", b"close"))  # the unread body is not drained
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _max_token_bytes(tokenizer) -> int:
    """An upper bound on the UTF-8 bytes one token stands for (byte-level symbols count 2 bytes: safe)."""
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # a tokenizer without a readable vocabulary: no early refusal
        return 0
    return max((len(piece.encode("utf-8")) for piece in vocab), default=0)


def _text_bytes(value) -> int:
    """UTF-8 bytes of every string in a (JSON-like) value."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return sum(_text_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_text_bytes(v) for v in value)
    return 0


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"We could not parse the JSON body of your request: {first.get('msg', '')}", None
    if tuple(first.get("loc", ())) == ("body",) and isinstance(first.get("input"), (bytes, str)):
        return "The body must be a JSON object sent with 'Content-Type: application/json'.", None

    def where(e: dict) -> str:
        # pydantic adds union branch labels ('str', 'list[TextPart]') to locations: not request fields
        parts = [str(p) for p in e.get("loc", ()) if p != "body"]
        parts = [
            p for p in parts if "[" not in p and p not in ("str", "int", "float", "bool", "dict", "list")
        ]
        return ".".join(parts)

    param = where(first) or None
    detail = "; ".join(f"{where(e) or 'body'}: {e.get('msg', '')}" for e in errors[:5])
    return f"Invalid request: {detail}", param


def create_app(
    engine: Engine,
    model_name: str,
    api_key: str | None = None,
    default_temperature: float = 1.0,
    default_top_p: float = 1.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    aliases: Sequence[str] = (),
) -> FastAPI:
    """Build the app around a started (or startable) :class:`Engine`; the engine runs while the app does.

    Requests may name the model `model_name` or any of `aliases` (e.g. the id the original MiniMind's
    ``chat_api.py`` sends); responses and ``/v1/models`` use the names as given."""
    created = int(time.time())
    names = list(dict.fromkeys([model_name, *aliases]))
    context = engine.context_length
    token_bytes = _max_token_bytes(engine.tokenizer)
    # one thread renders and tokenises: the event loop stays free, and the tokenizer is used by one thread
    render_pool = ThreadPoolExecutor(1, thread_name_prefix="minimind-render")
    vocab_size = int(getattr(engine.model.config, "vocab_size", 0) or len(engine.tokenizer))
    grammars = GrammarCompiler(engine.tokenizer, vocab_size)
    token_text = TokenText(engine.tokenizer)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.shutdown()
        render_pool.shutdown(wait=False, cancel_futures=True)

    async def check_api_key(request: Request) -> None:
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

    app = FastAPI(
        title="minimind-hf",
        lifespan=lifespan,
        dependencies=[Depends(check_api_key)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc), param=None, code="request_too_large"),
            status_code=413,
            headers={"Connection": "close"},
        )

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI wraps errors raised while reading the body
            return await _too_large(request, exc.__cause__)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), param=None, code=code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse(
            error_body(f"internal error: {type(exc).__name__}", type="server_error"), status_code=500
        )

    def model_card(name: str = model_name) -> dict:
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "minimind-hf",
            "max_model_len": context,
        }

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "pending": engine.pending}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [model_card(name) for name in names]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict:
        if model_id not in names:
            raise APIError(
                404, f"The model '{model_id}' does not exist", param="model", code="model_not_found"
            )
        return model_card(model_id)

    def constraint_for(req: ChatCompletionRequest, tools, opens_thinking: bool):
        """The grammar ``tool_choice`` / ``response_format`` impose, compiled; None when they impose none."""
        forced = req.forced_tools()
        schema = req.response_format.target_schema() if req.response_format else None
        if forced is None and schema is None:
            return None
        param = "tool_choice" if forced is not None else "response_format"
        if opens_thinking:
            raise APIError(
                400,
                f"{param} cannot be combined with open thinking (chat_template_kwargs): the grammar covers the "
                "whole reply",
                param=param,
            )
        if forced is not None and schema is not None:
            raise APIError(
                400, "tool_choice forces a tool call; response_format cannot apply too", param=param
            )
        if not grammars.available():
            raise APIError(
                400, f"{param} needs llguidance on the server: pip install llguidance", param=param,
                code="unsupported_parameter",
            )  # fmt: skip
        grammar = build_grammar(
            engine.tokenizer,
            call_tools=forced if forced is not None else tools,
            calls_required=forced is not None,
            response_schema=schema,
        )
        try:
            return grammars.compile(grammar)
        except GrammarError as exc:
            raise APIError(400, f"{param}: the schema could not be compiled: {exc}", param=param) from exc

    def check_model(req: SamplingRequest) -> None:
        if req.model not in names:
            served = ", ".join(f"'{n}'" for n in names)
            raise APIError(
                404,
                f"The model '{req.model}' does not exist; this server serves {served} (serve --model-name adds "
                "names).",
                param="model",
                code="model_not_found",
            )

    def check_room(n_prompt: int, wanted: int | None, param: str, what: str = "messages") -> int:
        """The tokens left for the reply after an ``n_prompt``-token prompt (400 when none, or fewer than
        ``wanted``)."""
        room = context - n_prompt
        if room < 1:
            raise APIError(
                400,
                f"This model's maximum context length is {context} tokens. However, your {what} "
                f"resulted in {n_prompt} tokens. Please reduce the length of the {what}.",
                param=what,
                code="context_length_exceeded",
            )
        if wanted is not None and wanted > room:
            raise APIError(
                400,
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{n_prompt + wanted} tokens ({n_prompt} in the {what}, {wanted} in the completion). "
                f"Please reduce the length of the {what} or completion.",
                param=param,
                code="context_length_exceeded",
            )
        return room

    def sampling(req: SamplingRequest, max_new_tokens: int, logprobs: int | None) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=default_temperature if req.temperature is None else req.temperature,
            top_p=default_top_p if req.top_p is None else req.top_p,
            top_k=req.top_k or 0,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            seed=req.seed,
            stop=tuple(req.stop or ()),
            ignore_eos=req.ignore_eos,
            logprobs=logprobs,
        )

    def prepare_chat(req: ChatCompletionRequest) -> list[EngineRequest]:
        check_model(req)
        tools = req.active_tools()
        messages = [m.for_template() for m in req.messages]
        if token_bytes:  # too long by its bytes alone: refuse before rendering / tokenising
            least_tokens = (_text_bytes(messages) + _text_bytes(tools)) // token_bytes
            if least_tokens >= context:
                raise APIError(
                    400,
                    f"This model's maximum context length is {context} tokens. However, your messages "
                    f"are at least {least_tokens} tokens long. Please reduce the length of the messages.",
                    param="messages",
                    code="context_length_exceeded",
                )
        try:
            text, ids = encode_chat_prompt(engine.tokenizer, messages, tools, req.opens_thinking())
        except TemplateError as exc:
            raise APIError(
                400, f"The messages could not be rendered with the chat template: {exc}", param="messages"
            ) from exc
        wanted = req.requested_tokens()
        param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        room = check_room(len(ids), wanted, param)
        params = sampling(req, wanted or room, req.logprobs_top())
        opens_thinking = prompt_opens_thinking(text)
        constraint = constraint_for(req, tools, opens_thinking)
        out = []
        for i in range(req.n):  # each choice its own seed, grammar state and parser
            out.append(
                EngineRequest(
                    ids,
                    dataclasses.replace(params, seed=req.choice_seed(i)),
                    constraint if i == 0 or constraint is None else constraint.copy(),
                    OutputParser(reasoning=opens_thinking, parse_tool_calls=bool(tools)),
                )
            )
        return out

    def prepare_text(req: CompletionRequest) -> list[EngineRequest]:
        check_model(req)
        out = []
        for prompt in req.prompts():
            if isinstance(prompt, str):
                least_tokens = _text_bytes(prompt) // token_bytes if token_bytes else 0
                if least_tokens >= context:  # too long by its bytes alone: refused before tokenising
                    check_room(least_tokens, None, "prompt", "prompt")
                with _TOKENIZER_LOCK:
                    ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            else:
                ids = prompt
                bad = [t for t in ids if not 0 <= t < vocab_size]
                if bad:
                    raise APIError(400, f"prompt token id {bad[0]} is outside the vocabulary (0..{vocab_size - 1})",
                                   param="prompt")  # fmt: skip
            if not ids:
                raise APIError(400, "the prompt is empty", param="prompt")
            room = check_room(len(ids), req.max_tokens, "max_tokens", "prompt")
            params = sampling(req, min(req.max_tokens or room, room), req.logprobs)
            for _ in range(req.n):
                seed = req.choice_seed(len(out))
                out.append(EngineRequest(list(ids), dataclasses.replace(params, seed=seed), None, None))
        return out

    def open_streams(requests: list[EngineRequest]) -> list[Choice]:
        if engine.closing:
            raise APIError(503, "The server is shutting down.", type="server_error", code="shutting_down")
        choices: list[Choice] = []
        try:
            for i, r in enumerate(requests):
                events = engine.stream(r.ids, r.params, r.constraint)
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

    async def off_loop(fn, req):
        return await asyncio.get_running_loop().run_in_executor(render_pool, fn, req)

    def sse(body) -> StreamingResponse:
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        choices = open_streams(await off_loop(prepare_chat, req))
        completion_id = "chatcmpl-" + uuid.uuid4().hex
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return sse(chat_sse(choices, completion_id, req.model, include_usage, token_text))
        return await _unless_disconnected(
            request, chat_response(choices, completion_id, req.model, token_text)
        )

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        choices = open_streams(await off_loop(prepare_text, req))
        completion_id = "cmpl-" + uuid.uuid4().hex
        echo = req.prompt if req.echo and isinstance(req.prompt, str) else None
        if req.echo and echo is None:
            for choice in choices:
                await choice.events.aclose()
            raise APIError(400, "echo is supported for a single text prompt", param="echo")
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return sse(text_sse(choices, completion_id, req.model, include_usage, token_text, echo))
        return await _unless_disconnected(
            request, text_response(choices, completion_id, req.model, token_text, echo)
        )

    return app


@dataclasses.dataclass
class EngineRequest:
    """One engine request of a response (one choice)."""

    ids: list[int]
    params: SamplingParams
    constraint: object | None
    parser: OutputParser | None


async def _unless_disconnected(request: Request, work):
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


class _StoppingServer(uvicorn.Server):
    """uvicorn waits for open connections before the app's shutdown runs; stopping the engine first ends
    every stream and pending request at once (finish "cancelled": an error event, or a 503)."""

    def __init__(self, config: uvicorn.Config, engine: Engine):
        super().__init__(config)
        self.engine = engine

    def handle_exit(self, sig, frame) -> None:
        self.engine.stop()
        super().handle_exit(sig, frame)


def run_server(app: FastAPI, engine: Engine, host: str, port: int, log_level: str = "warning") -> None:
    """Serve ``app`` until SIGINT / SIGTERM, which cancel the engine's work and stop within seconds."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S
    )
    _StoppingServer(config, engine).run()
