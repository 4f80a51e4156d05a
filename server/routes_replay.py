"""A thread's artefacts, and the replay of its runs as server-sent events."""

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse

from app.errors import ArtifactNotFoundError
from graphs.replay import MIN_SPEED, check_speed, replay
from graphs.runs import RunEvent
from graphs.threads import get_snapshot
from server.auth import Caller, guard
from server.routes_runs import ERRORS, SSE_DOC, Svc, ThreadId
from server.schemas import ArtifactInfo, ArtifactList
from server.sse import KEEPALIVE_S, format_event

router = APIRouter(prefix="/api/v1/threads", tags=["threads"])
SPEED = "1: as it happened, 10: ten times faster, 0: at once."
ArtifactId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]


@router.get("/{thread_id}/artifacts", responses=ERRORS)
async def list_artifacts(thread_id: ThreadId, svc: Svc, who: Caller) -> ArtifactList:
    """The artefacts the thread's steps produced (a tool's structured or large output, a rag
    step's sources), oldest first, without their content."""
    await guard(svc, who, thread_id, "runs")
    found = await svc.agent.artifacts.list(thread_id)
    if not found:
        await get_snapshot(svc.graph, thread_id)  # 404 for a thread that does not exist
    base = f"/api/v1/threads/{thread_id}/artifacts"
    return ArtifactList(
        thread_id=thread_id,
        artifacts=[
            ArtifactInfo(
                artifact_id=a.artifact_id,
                step_id=a.step_id,
                name=a.name,
                media_type=a.media_type,
                size=a.size,
                created_at=a.created_at,
                url=f"{base}/{a.artifact_id}",
            )
            for a in found
        ],
    )


@router.get(
    "/{thread_id}/artifacts/{artifact_id}",
    responses={200: {"content": {"application/octet-stream": {}}}, **ERRORS},
    response_class=Response,
)
async def get_artifact(
    thread_id: ThreadId, artifact_id: ArtifactId, svc: Svc, who: Caller
) -> Response:
    """One artefact's content, with its media type."""
    await guard(svc, who, thread_id, "runs")
    found = await svc.agent.artifacts.get(thread_id, artifact_id)
    if found is None:
        raise ArtifactNotFoundError(thread_id, artifact_id)
    artifact, content = found
    return Response(
        content,
        media_type=artifact.media_type,
        headers={"Content-Disposition": f'inline; filename="{artifact.name}"'},
    )


@router.get("/{thread_id}/replay", responses=SSE_DOC, response_class=StreamingResponse)
async def replay_thread(
    thread_id: ThreadId,
    svc: Svc,
    who: Caller,
    speed: Annotated[
        float,
        Query(
            ge=0,
            le=1000,
            description=f"1: as it happened; 10: ten times faster; 0: at once; else {MIN_SPEED}"
            " or more.",
        ),
    ] = 1.0,
) -> StreamingResponse:
    """Replay the thread's runs as the live stream sent them (`metadata` first, then
    plan_update, handoff, delta, step_result, interrupt, final, error), at `speed`; no model
    is called."""
    try:
        check_speed(speed)
    except ValueError as exc:
        error = {"type": "value_error", "loc": ["query", "speed"], "msg": str(exc), "input": speed}
        raise RequestValidationError([error]) from exc
    await guard(svc, who, thread_id, "runs")
    await get_snapshot(svc.graph, thread_id)  # 404 before the stream starts
    events = replay(svc.graph, svc.agent.db.pool, thread_id, speed=speed)
    return StreamingResponse(
        _sse(thread_id, speed, events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(
    thread_id: str, speed: float, events: AsyncGenerator[RunEvent, None]
) -> AsyncIterator[str]:
    yield format_event("metadata", {"thread_id": thread_id, "replay": True, "speed": speed})
    following: asyncio.Future[RunEvent] | None = None
    try:
        while True:
            # A slow stretch of the replay gets keep-alives; the replay is not cancelled
            # mid-wait (the wait is on a task, not on the generator itself).
            following = asyncio.ensure_future(anext(events))
            while not following.done():
                await asyncio.wait({following}, timeout=KEEPALIVE_S)
                if not following.done():
                    yield ": keep-alive\n\n"
            try:
                event = following.result()
            except StopAsyncIteration:
                return
            yield format_event(str(event["event"]), event)
    finally:
        if following is not None and not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following
        await events.aclose()
