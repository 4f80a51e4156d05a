"""The OpenAI-compatible chat surface (`/v1`): the agent as a chat model that any OpenAI
client, SDK or chat UI can call with a base URL.

- `GET /v1/models`: `agentgraph` (the configured chat model does the work) and
  `agentgraph:<model spec>` for the configured model by name; a request may name any
  `agentgraph:<spec>` the server can load.
- `POST /v1/chat/completions`, waited for or streamed (`stream: true`: chunks with
  `delta.content`, a last chunk with `finish_reason`, a usage chunk with
  `stream_options.include_usage`, then `data: [DONE]`). The last user message is the
  question; the answer's citations follow it as a "Sources" section, and come structured, with
  the thread id and any pending approval, in the `agentgraph` field that clients ignore.
- **Sessions:** a conversation is one thread: the `X-Thread-Id` header, else
  `metadata.thread_id`, else `user`, else a thread derived from the tenant, the system
  messages and the first user message, so that a client that resends the history lands on the
  same thread. The response's `X-Thread-Id` header names it.
- Run options (approval, mode, collection, ...) go in the `agentgraph` field of the request.
- **Approvals:** a run that stops for approval answers with its plan and how to reply; the
  next user message `approve`, `reject: <reason>` or a JSON plan resumes it, with the same
  resume value as every other surface.

Errors come in OpenAI's shape (`server.errors`).
"""

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.auth import Principal
from server.auth import Caller
from server.deps import Services, result_of, services
from server.openai_shared import (
    ERRORS,
    MODEL_ID,
    THREAD_HEADER,
    checked_thread_id,
    derived_thread,
    extension_of,
    model_spec,
)
from server.runner import RunHandle
from server.schemas import MAX_THREAD_ID_CHARS, RunOptions, RunResult
from server.turns import answer_deltas, content_of, rest_of, start_turn, tokens_of

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERRORS)
Svc = Annotated[Services, Depends(services)]


class ChatMessage(BaseModel):
    """One message of the conversation; text content, as a string or as text parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(
            str(p.get("text", "")) for p in self.content or [] if p.get("type") == "text"
        )


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """A chat completion request. OpenAI's sampling parameters (temperature, top_p, ...) are
    accepted and ignored: the agent's nodes choose their own."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=300)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=MAX_THREAD_ID_CHARS)
    metadata: dict[str, str] | None = None
    agentgraph: RunOptions | None = Field(
        default=None,
        description="The run options of the native API (approval, mode, collection, ...); "
        "with the OpenAI SDK, `extra_body={'agentgraph': {...}}`.",
    )


def session_thread(request: Request, body: "ChatRequest", who: Principal) -> str:
    """The thread of the conversation (see the module's docstring).

    Raises:
        ConfigError: a given thread id is empty, too long or holds control characters.
    """
    given = (
        request.headers.get(THREAD_HEADER) or (body.metadata or {}).get("thread_id") or body.user
    )
    if given is not None:
        return checked_thread_id(given)
    opening = [m.text() for m in body.messages if m.role in ("system", "developer")]
    first_user = next((m.text() for m in body.messages if m.role == "user"), "")
    return derived_thread(who, opening, first_user)


def _usage(result: RunResult | None) -> dict[str, int]:
    prompt, completion = tokens_of(result)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@router.get("/models")
async def list_models(svc: Svc, who: Caller) -> dict[str, Any]:
    """The agent as a model id, and the configured chat model by name."""
    created = int(time.time())
    ids = [MODEL_ID, f"{MODEL_ID}:{svc.settings.model}"]
    return {
        "object": "list",
        "data": [
            {"id": i, "object": "model", "created": created, "owned_by": "agentgraph"} for i in ids
        ],
    }


@router.post(
    "/chat/completions",
    response_model=None,
    responses={
        200: {
            "description": "A `chat.completion` object, or with `stream: true` its chunks "
            "as server-sent events ending with `data: [DONE]`.",
            "content": {"application/json": {}, "text/event-stream": {}},
        }
    },
)
async def chat_completions(request: Request, body: ChatRequest, svc: Svc, who: Caller) -> Response:
    """Answer the conversation's last user message with a run of the agent."""
    spec = model_spec(body.model)
    thread_id = session_thread(request, body, who)
    question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
    started = await start_turn(svc, who, thread_id, question, options=body.agentgraph, spec=spec)
    headers = {THREAD_HEADER: thread_id}
    completion_id = (
        f"chatcmpl-{started.run_id if isinstance(started, RunHandle) else uuid.uuid4().hex}"
    )
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _chunks(svc, started, body.model, completion_id, thread_id, include_usage)
        return StreamingResponse(
            chunks,
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    result = await result_of(svc, started) if isinstance(started, RunHandle) else None
    content = content_of(result) if result is not None else str(started)
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(result),
            "agentgraph": extension_of(thread_id, result),
        },
        headers=headers,
    )


def _chunk(
    completion_id: str, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, default=str)}\n\n"


async def _chunks(
    svc: Services,
    started: RunHandle | str,
    model: str,
    completion_id: str,
    thread_id: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The streamed completion: the answer's text as the run writes it, then the rest."""
    yield _sse(_chunk(completion_id, model, {"role": "assistant", "content": ""}))
    streamed = ""
    result: RunResult | None = None
    if isinstance(started, RunHandle):
        async for text in answer_deltas(started):
            streamed += text
            yield _sse(_chunk(completion_id, model, {"content": text}))
        result = await result_of(svc, started)
        content = content_of(result)
    else:
        content = started
    rest = rest_of(content, streamed)
    if rest:
        yield _sse(_chunk(completion_id, model, {"content": rest}))
    yield _sse(
        {
            **_chunk(completion_id, model, {}, finish="stop"),
            "agentgraph": extension_of(thread_id, result),
        }
    )
    if include_usage:
        yield _sse({**_chunk(completion_id, model, {}), "choices": [], "usage": _usage(result)})
    yield "data: [DONE]\n\n"
