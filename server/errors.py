"""One place that turns domain errors and bad requests into status codes and JSON bodies."""

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    AgentGraphError,
    ArtifactNotFoundError,
    AssistantNotFoundError,
    AuthError,
    ConfigError,
    CronNotFoundError,
    DatabaseError,
    ForbiddenError,
    InvalidDecisionError,
    ModelError,
    ModelNotFoundError,
    NothingToContinueError,
    NothingToResumeError,
    PlanValidationError,
    RateLimitedError,
    ResponseNotFoundError,
    RunEndedError,
    RunNotFoundError,
    ServerStoppingError,
    ThreadBusyError,
    ThreadExistsError,
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
    (RateLimitedError, 429),
    (ThreadNotFoundError, 404),
    (ModelNotFoundError, 404),
    (ResponseNotFoundError, 404),
    (RunNotFoundError, 404),
    (ArtifactNotFoundError, 404),
    (CronNotFoundError, 404),
    (AssistantNotFoundError, 404),
    (ThreadBusyError, 409),
    (RunEndedError, 409),
    (ThreadExistsError, 409),
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
    if request.url.path.startswith(OPENAI_PREFIX):
        return JSONResponse(_openai_error(body, status), status_code=status, headers=headers)
    return JSONResponse(body, status_code=status, headers=headers)


OPENAI_PREFIX = "/v1/"
"""The OpenAI-compatible routes (`server.openai_chat`, `server.openai_responses`), whose
errors take OpenAI's shape."""
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}

_OPENAI_CODES = {
    "AuthError": "invalid_api_key",
    "ModelNotFoundError": "model_not_found",
    "ResponseNotFoundError": "not_found",
    "RateLimitedError": "rate_limit_exceeded",
    "BudgetExceededError": "insufficient_quota",
}
"""OpenAI's codes for the errors its clients know by code; the others keep their name."""


def _openai_error(body: dict[str, object], status: int) -> dict[str, object]:
    """An error body as OpenAI's API writes it, which its clients read."""
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = _OPENAI_CODES.get(str(body["error"]), body["error"])
    return {"error": {"message": body["message"], "type": kind, "param": None, "code": code}}


async def _domain(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AgentGraphError)
    headers: dict[str, str] | None = None
    if isinstance(exc, AuthError):
        headers = {"WWW-Authenticate": 'Bearer realm="agentgraph"'}
    elif isinstance(exc, RateLimitedError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    body = _body(type(exc).__name__, str(exc), exc.detail)
    return _respond(request, body, status_of(exc), headers)


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"})
    for e in errors:
        if e["type"] == "string_pattern_mismatch" and e["loc"][-1:] == ["thread_id"]:
            e["msg"] = "a thread id may hold no control characters"
    return _respond(request, _body("ValidationError", _messages(errors), errors), 422)


def _messages(errors: list[dict[str, Any]]) -> str:
    """One line naming each field that failed validation and why."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)


async def _pydantic(request: Request, exc: Exception) -> Response:
    """A model validation that escaped a route's own (LangServe validates batch inputs late):
    what was sent cannot be used."""
    assert isinstance(exc, PydanticValidationError)
    errors = jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"})
    return _respond(request, _body("ValidationError", _messages(errors) or str(exc), errors), 422)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    name = "PayloadTooLarge" if exc.status_code == 413 else "HTTPError"
    return _respond(request, _body(name, str(exc.detail)), exc.status_code, exc.headers)


async def _unstorable(request: Request, exc: Exception) -> Response:
    # Every field a client sends is checked before it reaches Postgres; a value that slips
    # past those checks (a NUL character, a number out of range) is still the request's fault.
    logger.warning("%s %s: Postgres refused a value: %s", request.method, request.url.path, exc)
    message = "the request holds a value the database cannot store (a NUL character, say)"
    return _respond(request, _body("ValidationError", message), 422)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return _respond(request, _body(type(exc).__name__, "internal error; see the server log"), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and anything unexpected to JSON error bodies."""
    app.add_exception_handler(AgentGraphError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(PydanticValidationError, _pydantic)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(psycopg.DataError, _unstorable)
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
        if _is_json(scope):
            await self._json(scope, receive, send)
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

    async def _json(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read a JSON body whole (it is small) and refuse, before any route parses it, one
        that is over the limit, not UTF-8 or nested deeper than `MAX_JSON_DEPTH`."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = json_problem(body)
        if problem is not None:
            status, why = problem
            refusal = JSONResponse(_body("BadJson", why), status_code=status)
            await refusal(scope, _no_receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # what comes next: the client's disconnect

        await self.app(scope, replay, send)


MAX_JSON_DEPTH = 64
"""The deepest nesting of arrays and objects a request body may have."""


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media = bytes(value).split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def json_problem(body: bytes) -> tuple[int, str] | None:
    """Why a JSON request body cannot be used, with its status, if it cannot: not UTF-8 or
    nested too deeply (400: either would break a parser), or not JSON (422, naming where).
    Checked here, once, so that every route (LangServe's too) refuses them alike."""
    if not body:
        return None  # the route says whether it needs one
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return 400, f"the request body is not UTF-8 (at byte {exc.start})"
    too_deep = 400, f"the request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"
    try:
        value = json.loads(text)
    except RecursionError:
        return too_deep
    except ValueError as exc:
        return 422, f"the request body is not valid JSON: {exc}"
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return None  # cannot be nested deeper, whatever it holds
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return too_deep
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
