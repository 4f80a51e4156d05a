"""The OpenAI-compatible surface (`/v1`): the agent as a chat model that any OpenAI client,
SDK or chat UI can call with a base URL.

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

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.auth import Principal
from app.errors import ConfigError, ModelNotFoundError, ThreadNotFoundError
from graphs.driver import RunOrder
from graphs.threads import get_snapshot
from server.auth import Caller, claim, guard
from server.deps import Services, result_of, services
from server.runner import RunHandle
from server.schemas import MAX_THREAD_ID_CHARS, RunOptions, RunResult


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """An error as OpenAI's API writes it (`server.errors`)."""

    error: OpenAIErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIError} for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}
router = APIRouter(prefix="/v1", tags=["openai"], responses=ERRORS)
Svc = Annotated[Services, Depends(services)]

MODEL_ID = "agentgraph"
THREAD_HEADER = "X-Thread-Id"
HOW_TO_ANSWER = (
    "Reply `approve` to run it, `reject: <reason>` to stop, or the plan as JSON to run an "
    "edited one."
)


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


def model_spec(model: str) -> str | None:
    """The chat model spec a model id names (None: the configured one).

    Raises:
        ModelNotFoundError: the id is no agentgraph model.
    """
    if model == MODEL_ID:
        return None
    prefix = f"{MODEL_ID}:"
    if model.startswith(prefix) and len(model) > len(prefix):
        return model[len(prefix) :]
    raise ModelNotFoundError(
        f"the model {model!r} does not exist: use {MODEL_ID!r} or '{MODEL_ID}:<model spec>'"
    )


def session_thread(request: Request, body: ChatRequest, who: Principal) -> str:
    """The thread of the conversation (see the module's docstring).

    Raises:
        ConfigError: a given thread id is empty, too long or holds control characters.
    """
    given = (
        request.headers.get(THREAD_HEADER) or (body.metadata or {}).get("thread_id") or body.user
    )
    if given is not None:
        if not 0 < len(given) <= MAX_THREAD_ID_CHARS or any(ord(c) < 32 for c in given):
            raise ConfigError(
                f"a thread id is 1 to {MAX_THREAD_ID_CHARS} characters, no control characters"
            )
        return given
    opening = [m.text() for m in body.messages if m.role in ("system", "developer")]
    first_user = next((m.text() for m in body.messages if m.role == "user"), "")
    seed = json.dumps([who.tenant, opening, first_user])
    return "chat-" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def decision_of(text: str) -> dict[str, Any] | None:
    """The resume value a reply to an approval means; None for a reply that is none."""
    reply = text.strip()
    word = reply.lower().rstrip(".!")
    if word in ("approve", "approved", "yes", "ok"):
        return {"decision": "approve"}
    if word.startswith("reject"):
        reason = reply[len("reject") :].lstrip(" :-").strip()
        return {"decision": "reject", "reason": reason or None}
    try:
        plan = json.loads(reply)
    except ValueError:
        return None
    if isinstance(plan, dict) and "steps" in plan:
        return {"decision": "edit", "plan": plan}
    return None


async def _start(
    svc: Services, who: Principal, thread_id: str, body: ChatRequest, spec: str | None
) -> RunHandle | str:
    """Start the run the last user message asks for; or return what to tell the user, when
    the thread waits for an approval and the message is no answer to it."""
    question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
    if not question.strip():
        raise ConfigError("messages: the conversation has no user message with text")
    try:
        waiting = bool((await get_snapshot(svc.graph, thread_id)).interrupts)
        exists = True
    except ThreadNotFoundError:
        waiting, exists = False, False
    if exists:
        await guard(svc, who, thread_id, "runs")
    if waiting:
        decision = decision_of(question)
        if decision is None:
            return f"This conversation waits for the approval of a plan. {HOW_TO_ANSWER}"
        await guard(svc, who, thread_id, "approvals")
        return await svc.runs.start(
            RunOrder(thread_id=thread_id, decision={**decision, "by": who.label}), who
        )
    await claim(svc, who, thread_id)
    options = body.agentgraph.overrides() if body.agentgraph else {}
    if spec:
        options["model"] = spec
    order = RunOrder(thread_id=thread_id, request=question, options=options, new_thread=not exists)
    return await svc.runs.start(order, who)


def _sources(citations: list[dict[str, Any]]) -> str:
    if not citations:
        return ""
    lines = [f"[{i}] {c['source']}: {c['quote']}" for i, c in enumerate(citations, 1)]
    return "\n\nSources:\n" + "\n".join(lines)


def _content(result: RunResult) -> str:
    """The assistant message for where the run stands."""
    if result.status == "interrupted" and result.pending_approval is not None:
        plan = result.pending_approval.get("plan") or {}
        steps = "\n".join(
            f"{i}. {s.get('instruction', '')}" for i, s in enumerate(plan.get("steps", []), 1)
        )
        return f"The plan waits for approval:\n{steps}\n\n{HOW_TO_ANSWER}"
    if result.status == "failed":
        return f"The run failed: {result.error or 'see the thread'}"
    return (result.answer or "") + _sources(result.citations)


def _usage(result: RunResult | None) -> dict[str, int]:
    report = (result.report if result else None) or {}
    prompt, completion = int(report.get("input_tokens", 0)), int(report.get("output_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _extension(thread_id: str, result: RunResult | None) -> dict[str, Any]:
    return {
        "thread_id": thread_id,
        "run_id": result.run_id if result else None,
        "status": result.status if result else "interrupted",
        "citations": result.citations if result else [],
        "interrupt": result.pending_approval if result else None,
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
    started = await _start(svc, who, thread_id, body, spec)
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
    content = _content(result) if result is not None else str(started)
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
            "agentgraph": _extension(thread_id, result),
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
        answering: str | None = None
        """The step whose output is the answer, when the plan has one step."""
        while (event := await started.queue.get()) is not None:
            kind = event["event"]
            if kind == "plan_update":
                steps = (event.get("plan") or {}).get("steps", [])
                # One step answers the question itself; several are joined by the synthesis.
                answering = steps[0]["id"] if len(steps) == 1 else None
            elif kind == "delta" and (
                event.get("node") == "synthesize"
                or (answering is not None and event.get("step_id") == answering)
            ):
                streamed += str(event["text"])
                yield _sse(_chunk(completion_id, model, {"content": event["text"]}))
        result = await result_of(svc, started)
        content = _content(result)
    else:
        content = started
    # What the run wrote is the answer's start; if a replan changed it, the whole answer.
    rest = content[len(streamed) :] if content.startswith(streamed) else "\n\n" + content
    if rest:
        yield _sse(_chunk(completion_id, model, {"content": rest}))
    yield _sse(
        {
            **_chunk(completion_id, model, {}, finish="stop"),
            "agentgraph": _extension(thread_id, result),
        }
    )
    if include_usage:
        yield _sse({**_chunk(completion_id, model, {}), "choices": [], "usage": _usage(result)})
    yield "data: [DONE]\n\n"
