"""One place that turns domain errors and bad requests into status codes and JSON bodies."""

import json
import logging
from collections.abc import Mapping

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    AgentGraphError,
    AuthError,
    ConfigError,
    DatabaseError,
    ForbiddenError,
    InvalidDecisionError,
    ModelError,
    NothingToContinueError,
    NothingToResumeError,
    PlanValidationError,
    ServerStoppingError,
    ThreadBusyError,
    ThreadNotFoundError,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
SSE_ERROR_ROUTES = "sse_error_routes"
"""The `app.state` attribute naming the routes (LangServe's streams) whose errors are sent as
an `error` event, as LangServe itself does: `{"status_code": …, "message": …}` on a 200 stream,
which `RemoteRunnable` raises as `httpx.HTTPStatusError` with that status and message."""
STATUS: tuple[tuple[type[AgentGraphError], int], ...] = (
    (AuthError, 401),
    (ForbiddenError, 403),
    (ThreadNotFoundError, 404),
    (ThreadBusyError, 409),
    (NothingToResumeError, 409),
    (NothingToContinueError, 409),
    (InvalidDecisionError, 422),
    (PlanValidationError, 422),
    (ConfigError, 422),
    (ServerStoppingError, 503),
    (DatabaseError, 503),
    (ModelError, 502),
)


def status_of(exc: AgentGraphError) -> int:
    """Return the HTTP status of a domain error."""
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code
    return 400


def _body(error: str, message: str, detail: object = None) -> dict[str, object]:
    return {"error": error, "message": message, "detail": detail}


def _respond(
    request: Request,
    body: dict[str, object],
    status: int,
    headers: Mapping[str, str] | None = None,
) -> Response:
    route = request.scope.get("route")
    if getattr(route, "path", None) in getattr(request.app.state, SSE_ERROR_ROUTES, ()):
        event = json.dumps({"status_code": status, "message": body["message"]})
        return Response(f"event: error\ndata: {event}\n\n", media_type="text/event-stream")
    return JSONResponse(body, status_code=status, headers=headers)


async def _domain(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AgentGraphError)
    headers = (
        {"WWW-Authenticate": 'Bearer realm="agentgraph"'} if isinstance(exc, AuthError) else None
    )
    return _respond(request, _body(type(exc).__name__, str(exc)), status_of(exc), headers)


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"})
    message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return _respond(request, _body("ValidationError", message, errors), 422)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    name = "PayloadTooLarge" if exc.status_code == 413 else "HTTPError"
    return _respond(request, _body(name, str(exc.detail)), exc.status_code, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return _respond(request, _body(type(exc).__name__, "internal error; see the server log"), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and anything unexpected to JSON error bodies."""
    app.add_exception_handler(AgentGraphError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


class BodyLimit:
    """Refuse request bodies over a size with 413, by Content-Length or as they stream in."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send) -> None:
        body = JSONResponse(
            _body("PayloadTooLarge", f"the request body is larger than {self.max_bytes} bytes"),
            status_code=413,
        )
        await body({"type": "http"}, _no_receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(send)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes HTTPException through body parsing; it becomes a 413.
                    raise HTTPException(413, f"the request body is larger than {self.max_bytes}")
            return message

        await self.app(scope, counting_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
