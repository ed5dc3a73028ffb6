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

This module assembles the app and runs it; the parts live in ``state`` (what the routes share),
``routes`` (the handlers), ``prepare`` (API requests -> engine requests, on the render thread) and
``errors`` (the body-size limit and the error handlers).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import asynccontextmanager

import uvicorn
from fastapi import Depends, FastAPI

from .engine import Engine
from .errors import BodySizeLimit, add_error_handlers
from .routes import add_routes, check_api_key
from .state import ServerState

__all__ = ["DEFAULT_MAX_BODY_BYTES", "GRACEFUL_SHUTDOWN_S", "create_app", "run_server"]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
GRACEFUL_SHUTDOWN_S = 5  # after SIGTERM / Ctrl-C, at most this long for open connections to close


@asynccontextmanager
async def _lifespan(app: FastAPI):
    state: ServerState = app.state.server
    state.engine.start()
    yield
    state.engine.shutdown()
    state.render_pool.shutdown(wait=False, cancel_futures=True)


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
    app = FastAPI(
        title="minimind-hf",
        lifespan=_lifespan,
        dependencies=[Depends(check_api_key)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.server = ServerState.build(
        engine,
        model_name,
        aliases,
        api_key=api_key,
        default_temperature=default_temperature,
        default_top_p=default_top_p,
    )
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    add_error_handlers(app)
    add_routes(app)
    return app


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
