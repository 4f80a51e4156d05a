"""The OpenAI Responses API (`/v1/responses`) over the agent: what OpenAI's newer clients and
agent SDKs call instead of chat completions.

- `POST /v1/responses`, waited for or streamed (`stream: true`: `response.created`,
  `response.in_progress`, `response.output_item.added`, `response.content_part.added`,
  `response.output_text.delta` as the run writes the answer, the matching `.done` events and
  `response.completed` with the run's real usage, or `response.failed`). The output is one
  assistant message; each citation is a `file_citation` annotation (file id: the chunk,
  file name: the source) on the trailing "Sources" section, and the run's thread, citations
  and pending approval come in the `agentgraph` field as in chat completions.
- **Threads:** the `X-Thread-Id` header, else `previous_response_id` (its thread, where it
  stands now: a later response on that thread is not undone), else `metadata.thread_id`,
  else a thread derived from the tenant, the instructions and the first user message.
- **Approvals** as in chat completions: the next input `approve`, `reject: <reason>` or a
  JSON plan, usually with `previous_response_id`, resumes the run.
- `GET /v1/responses/{id}` returns a stored response; `DELETE` deletes it (the thread stays).
  `store: false` keeps nothing, and such a response cannot be continued by its id.

Left out, and refused or ignored as said: tools and function calls (input items other than
messages are refused), `background`, `conversation` objects, `input_items` listing, cancel,
and the sampling and truncation parameters (accepted and ignored: the agent's nodes choose
their own). `instructions` shapes the derived thread only; the agent keeps its own prompts.
"""

import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.auth import Principal
from app.errors import ConfigError, ResponseNotFoundError
from app.responses import StoredResponse
from server.auth import Caller, guard
from server.deps import Services, result_of, services
from server.openai_shared import (
    ERRORS,
    THREAD_HEADER,
    checked_thread_id,
    derived_thread,
    extension_of,
    model_spec,
)
from server.runner import RunHandle
from server.schemas import ID_PATTERN, RunOptions, RunResult
from server.turns import answer_deltas, content_of, rest_of, start_turn, tokens_of

router = APIRouter(prefix="/v1/responses", tags=["openai"], responses=ERRORS)
Svc = Annotated[Services, Depends(services)]
ResponseId = Annotated[str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)]


class InputPart(BaseModel):
    """A part of a message's content; only text parts carry anything the agent reads."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=100)
    text: str | None = None


class InputMessage(BaseModel):
    """A message of the input (other item types, such as tool outputs, are not supported)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(
            p.text or "" for p in self.content if p.type in ("input_text", "output_text", "text")
        )


class ResponseRequest(BaseModel):
    """A Responses API request (see the module's docstring for what is carried)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=300)
    input: str | list[InputMessage] = Field(min_length=1)
    instructions: str | None = Field(default=None, max_length=100_000)
    previous_response_id: ResponseId | None = None
    stream: bool = False
    store: bool = True
    metadata: dict[str, str] | None = None
    agentgraph: RunOptions | None = Field(
        default=None,
        description="The run options of the native API (approval, mode, collection, ...); "
        "with the OpenAI SDK, `extra_body={'agentgraph': {...}}`.",
    )

    def messages(self) -> list[InputMessage]:
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=self.input)]
        return self.input

    def question(self) -> str:
        """The last user message's text."""
        return next((m.text() for m in reversed(self.messages()) if m.role == "user"), "")


async def _thread(svc: Services, request: Request, body: ResponseRequest, who: Principal) -> str:
    """The thread the response runs on (see the module's docstring).

    Raises:
        ConfigError: a given thread id is empty, too long or holds control characters.
        ResponseNotFoundError: `previous_response_id` names no response the caller may see.
    """
    if given := request.headers.get(THREAD_HEADER):
        return checked_thread_id(given)
    if body.previous_response_id is not None:
        return (await _stored(svc, who, body.previous_response_id)).thread_id
    if given := (body.metadata or {}).get("thread_id"):
        return checked_thread_id(given)
    opening = [body.instructions or ""] + [
        m.text() for m in body.messages() if m.role in ("system", "developer")
    ]
    first_user = next((m.text() for m in body.messages() if m.role == "user"), "")
    return derived_thread(who, opening, first_user)


async def _stored(svc: Services, who: Principal, response_id: str) -> StoredResponse:
    """The stored response of that id, when the caller may see its thread.

    Raises:
        ResponseNotFoundError: there is none, or it is another tenant's.
    """
    stored = await svc.responses.get(response_id)
    if stored is None or (stored.tenant != who.tenant and not who.sees_everything):
        raise ResponseNotFoundError(f"no response with id {response_id!r} is stored")
    return stored


def _annotations(text: str, citations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A `file_citation` for each citation, at its line of the "Sources" section."""
    found = []
    for i, c in enumerate(citations, 1):
        index = text.rfind(f"[{i}] {c['source']}:")
        if index >= 0:
            found.append(
                {
                    "type": "file_citation",
                    "file_id": c["chunk_id"],
                    "filename": c["source"],
                    "index": index,
                }
            )
    return found


def _usage(result: RunResult | None) -> dict[str, Any]:
    input_tokens, output_tokens = tokens_of(result)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


class _Response:
    """One response as it is built: its id, its message and the request it answers."""

    def __init__(self, body: ResponseRequest, thread_id: str, started: RunHandle | str) -> None:
        self.request = body
        self.thread_id = thread_id
        self.started = started
        run = started.run_id if isinstance(started, RunHandle) else uuid.uuid4().hex
        self.id = f"resp_{run}"
        self.message_id = f"msg_{run}"
        self.created_at = int(time.time())

    def part(self, text: str, result: RunResult | None) -> dict[str, Any]:
        citations = result.citations if result else []
        return {"type": "output_text", "text": text, "annotations": _annotations(text, citations)}

    def message(self, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def body(
        self, status: str, *, text: str | None = None, result: RunResult | None = None
    ) -> dict[str, Any]:
        """The response object; in progress it has no output yet."""
        output = [] if text is None else [self.message("completed", [self.part(text, result)])]
        failed = result is not None and result.status == "failed"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": int(time.time()) if status != "in_progress" else None,
            "status": status,
            "model": self.request.model,
            "output": output,
            "error": (
                {"code": "server_error", "message": result.error or "the run failed"}
                if failed and result is not None
                else None
            ),
            "incomplete_details": None,
            "instructions": self.request.instructions,
            "metadata": self.request.metadata or {},
            "previous_response_id": self.request.previous_response_id,
            "parallel_tool_calls": False,
            "tool_choice": "none",
            "tools": [],
            "store": self.request.store,
            "usage": _usage(result) if status != "in_progress" else None,
            "agentgraph": extension_of(self.thread_id, result),
        }

    def final(self, text: str, result: RunResult | None) -> dict[str, Any]:
        status = "failed" if result is not None and result.status == "failed" else "completed"
        return self.body(status, text=text, result=result)


async def _keep(svc: Services, who: Principal, response: _Response, body: dict[str, Any]) -> None:
    if response.request.store:
        await svc.responses.save(
            response.id, thread_id=response.thread_id, tenant=who.tenant, body=body
        )


@router.post(
    "",
    response_model=None,
    responses={
        200: {
            "description": "A `response` object, or with `stream: true` its events as "
            "server-sent events.",
            "content": {"application/json": {}, "text/event-stream": {}},
        }
    },
)
async def create_response(
    request: Request, body: ResponseRequest, svc: Svc, who: Caller
) -> Response:
    """Answer the input's last user message with a run of the agent."""
    spec = model_spec(body.model)
    if not body.question().strip():
        raise ConfigError("input: it has no user message with text")
    thread_id = await _thread(svc, request, body, who)
    started = await start_turn(
        svc, who, thread_id, body.question(), options=body.agentgraph, spec=spec
    )
    response = _Response(body, thread_id, started)
    headers = {THREAD_HEADER: thread_id}
    if body.stream:
        return StreamingResponse(
            _events(svc, who, response),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    result = await result_of(svc, started) if isinstance(started, RunHandle) else None
    final = response.final(content_of(result) if result else str(started), result)
    await _keep(svc, who, response, final)
    return JSONResponse(final, headers=headers)


def _sequence() -> Callable[..., str]:
    numbers = itertools.count()

    def event(kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": next(numbers), **fields}
        return f"event: {kind}\ndata: {json.dumps(payload, default=str)}\n\n"

    return event


async def _events(svc: Services, who: Principal, response: _Response) -> AsyncIterator[str]:
    """The streamed response: its events, the answer's text as the run writes it."""
    event = _sequence()
    at = {"item_id": response.message_id, "output_index": 0, "content_index": 0}
    yield event("response.created", response=response.body("in_progress"))
    yield event("response.in_progress", response=response.body("in_progress"))
    yield event(
        "response.output_item.added", output_index=0, item=response.message("in_progress", [])
    )
    yield event("response.content_part.added", **at, part=response.part("", None))
    streamed = ""
    result: RunResult | None = None
    if isinstance(response.started, RunHandle):
        async for text in answer_deltas(response.started):
            streamed += text
            yield event("response.output_text.delta", **at, delta=text, logprobs=[])
        result = await result_of(svc, response.started)
        content = content_of(result)
    else:
        content = response.started
    if rest := rest_of(content, streamed):
        yield event("response.output_text.delta", **at, delta=rest, logprobs=[])
    text = streamed + rest
    part = response.part(text, result)
    yield event("response.output_text.done", **at, text=text, logprobs=[])
    yield event("response.content_part.done", **at, part=part)
    yield event(
        "response.output_item.done", output_index=0, item=response.message("completed", [part])
    )
    final = response.final(text, result)
    await _keep(svc, who, response, final)
    yield event(f"response.{final['status']}", response=final)


@router.get("/{response_id}")
async def get_response(response_id: ResponseId, svc: Svc, who: Caller) -> dict[str, Any]:
    """A stored response, as it was sent."""
    stored = await _stored(svc, who, response_id)
    await guard(svc, who, stored.thread_id, "runs")
    body: dict[str, Any] = stored.body
    return body


@router.delete("/{response_id}")
async def delete_response(response_id: ResponseId, svc: Svc, who: Caller) -> dict[str, Any]:
    """Delete a stored response; its thread and its run stay."""
    stored = await _stored(svc, who, response_id)
    await guard(svc, who, stored.thread_id, "runs")
    await svc.responses.delete(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}
