"""Every error of the HTTP API in OpenAI's body ``{"error": {"message", "type", "param", "code"}}``: the
request-body size limit (ASGI middleware) and the app's exception handlers, malformed JSON and unknown
routes included."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .schemas import APIError, error_body

logger = logging.getLogger(__name__)


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
        return (
            f"The request body ({size} bytes or more) is larger than this server's limit of "
            f"{self.max_bytes} bytes."
        )


async def _send_error(send, status: int, message: str, code: str | None) -> None:
    body = json.dumps(error_body(message, param=None, code=code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"connection", b"close"))  # the unread body is not drained
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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


async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
    return JSONResponse(
        error_body(str(exc), param=None, code="request_too_large"),
        status_code=413,
        headers={"Connection": "close"},
    )


async def api_error(request: Request, exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, param = _validation_message(exc)
    return JSONResponse(error_body(message, param=param), status_code=400)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI wraps errors raised while reading the body
        return await too_large(request, exc.__cause__)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return JSONResponse(error_body(str(exc.detail), param=None, code=code), status_code=exc.status_code)


async def crash(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error")
    return JSONResponse(
        error_body(f"internal error: {type(exc).__name__}", type="server_error"), status_code=500
    )


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's body (FastAPI's own are ``{"detail": ...}``)."""
    app.add_exception_handler(BodyTooLarge, too_large)
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, crash)
