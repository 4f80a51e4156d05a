"""Start and resume runs: streamed as server-sent events, or waited for."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import StreamingResponse

from app.auth import Principal
from graphs.driver import RunOrder
from graphs.runs import new_thread_id
from server.auth import Caller, claim, guard
from server.deps import Services, result_of, services
from server.runner import RunHandle
from server.schemas import (
    MAX_THREAD_ID_CHARS,
    THREAD_ID_PATTERN,
    Decision,
    ErrorBody,
    RunRequest,
    RunResult,
)
from server.sse import event_stream

router = APIRouter(prefix="/api/v1", tags=["runs"])
ThreadId = Annotated[
    str, Path(min_length=1, max_length=MAX_THREAD_ID_CHARS, pattern=THREAD_ID_PATTERN)
]
Svc = Annotated[Services, Depends(services)]
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}
SSE_DOC: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "Events: metadata, plan_update, handoff, delta, step_result, "
        "interrupt, final, error; a ': keep-alive' comment when idle.",
    },
    **ERRORS,
}


async def _start(svc: Services, body: RunRequest, who: Principal) -> RunHandle:
    thread_id = body.thread_id or new_thread_id()
    await claim(svc, who, thread_id)
    return await svc.runs.start(
        RunOrder(
            thread_id=thread_id,
            request=body.question,
            options=body.overrides(),
            new_thread=body.thread_id is None,
            multitask=body.multitask_strategy,
        ),
        who,
    )


async def resume_thread(
    svc: Services, who: Principal, thread_id: str, decision: dict[str, Any]
) -> RunHandle:
    """Answer a thread's pending approval as `who` (recorded in the approval history)."""
    await guard(svc, who, thread_id, "approvals")
    return await svc.runs.start(
        RunOrder(thread_id=thread_id, decision={**decision, "by": who.label}), who
    )


async def continue_thread(svc: Services, who: Principal, thread_id: str) -> RunHandle:
    await guard(svc, who, thread_id, "runs")
    return await svc.runs.start(RunOrder(thread_id=thread_id, proceed=True), who)


@router.post("/agent/run.stream", response_class=StreamingResponse, responses=SSE_DOC)
async def run_stream(body: RunRequest, svc: Svc, who: Caller) -> StreamingResponse:
    """Start a run and stream its events. The run goes on if the client disconnects."""
    return event_stream(await _start(svc, body, who), keepalive_s=svc.keepalive_s)


@router.post("/agent/run", responses=ERRORS)
async def run_wait(body: RunRequest, svc: Svc, who: Caller) -> RunResult:
    """Start a run and wait for its end or its first interrupt."""
    return await result_of(svc, await _start(svc, body, who))


@router.post(
    "/threads/{thread_id}/resume.stream", response_class=StreamingResponse, responses=SSE_DOC
)
async def resume_stream(
    thread_id: ThreadId, body: Decision, svc: Svc, who: Caller
) -> StreamingResponse:
    """Answer a pending approval (approve, reject with a reason, edit with a plan) and stream."""
    handle = await resume_thread(svc, who, thread_id, body.model_dump())
    return event_stream(handle, keepalive_s=svc.keepalive_s)


@router.post("/threads/{thread_id}/resume", responses=ERRORS)
async def resume_wait(thread_id: ThreadId, body: Decision, svc: Svc, who: Caller) -> RunResult:
    """Answer a pending approval and wait for the run's end or its next interrupt."""
    handle = await resume_thread(svc, who, thread_id, body.model_dump())
    return await result_of(svc, handle)


@router.post(
    "/threads/{thread_id}/continue.stream", response_class=StreamingResponse, responses=SSE_DOC
)
async def continue_stream(thread_id: ThreadId, svc: Svc, who: Caller) -> StreamingResponse:
    """Continue a run that a server stop or a crash cut off, from its last checkpoint, and
    stream. Steps that finished before the stop are not run again."""
    handle = await continue_thread(svc, who, thread_id)
    return event_stream(handle, keepalive_s=svc.keepalive_s)


@router.post("/threads/{thread_id}/continue", responses=ERRORS)
async def continue_wait(thread_id: ThreadId, svc: Svc, who: Caller) -> RunResult:
    """Continue a run that was cut off and wait for its end or its next interrupt."""
    handle = await continue_thread(svc, who, thread_id)
    return await result_of(svc, handle)
