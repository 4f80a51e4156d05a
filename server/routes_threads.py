"""Inspect threads, list their checkpoints, and fork them."""

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from langgraph.errors import InvalidUpdateError

from app.errors import InvalidDecisionError, ThreadNotFoundError
from graphs.retention import delete_thread as remove_thread
from graphs.runs import thread_config
from graphs.thread_list import recent_threads
from graphs.threads import CheckpointInfo, fork, get_snapshot, history, run_state, view_thread
from server.auth import Caller, guard, needs
from server.routes_runs import ERRORS, Svc, ThreadId
from server.schemas import (
    AuditDocument,
    ForkRequest,
    ThreadDeleted,
    ThreadDocument,
    ThreadSummary,
)

router = APIRouter(prefix="/api/v1/threads", tags=["threads"])


@router.get("", responses=ERRORS)
async def list_threads(
    svc: Svc,
    who: Caller,
    status: Annotated[
        Literal["running", "interrupted", "done", "failed", "rejected"] | None,
        Query(description="Only threads in this status."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[ThreadSummary]:
    """The most recently active threads (the caller's tenant's), newest first: status,
    question, tokens, cost, age and who started each."""
    needs(who, "runs")
    found = await recent_threads(
        svc.graph,
        svc.agent.db.pool,
        status=status,
        tenant=who.tenant_filter,
        limit=limit,
    )
    return [
        ThreadSummary.model_validate(
            {
                **t,
                "created_at": t["created_at"].isoformat(),
                "updated_at": t["updated_at"].isoformat(),
            }
        )
        for t in found
    ]


@router.get("/{thread_id}", responses=ERRORS)
async def get_thread(thread_id: ThreadId, svc: Svc, who: Caller) -> ThreadDocument:
    """Where a thread stands: status, plan and its history, pending approval, answer, report,
    and whether it was cut off mid-run and can be continued."""
    await guard(svc, who, thread_id, "runs")
    view = await view_thread(svc.graph, thread_id)
    status, can_continue = run_state(view, running=await svc.runs.is_running(thread_id))
    return ThreadDocument.model_validate({**view, "status": status, "can_continue": can_continue})


@router.get("/{thread_id}/history", responses=ERRORS)
async def get_history(
    thread_id: ThreadId,
    svc: Svc,
    who: Caller,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> dict[str, Any]:
    """List the thread's checkpoints, newest first."""
    await guard(svc, who, thread_id, "runs")
    items: list[CheckpointInfo] = await history(svc.graph, thread_id, limit=limit)
    return {"thread_id": thread_id, "checkpoints": items}


@router.delete("/{thread_id}", responses=ERRORS)
async def delete_thread(thread_id: ThreadId, svc: Svc, who: Caller) -> ThreadDeleted:
    """Delete a thread wholly: its checkpoints, channel values and pending writes. A thread
    being run answers 409; nothing is deleted then."""
    await guard(svc, who, thread_id, "runs")
    deleted = await remove_thread(svc.agent.db.pool, thread_id)
    if not deleted:
        raise ThreadNotFoundError(thread_id)
    await svc.keys.forget(thread_id)
    await svc.responses.forget(thread_id)
    await svc.agent.audit.forget(thread_id)
    return ThreadDeleted(thread_id=thread_id, checkpoints_deleted=deleted)


@router.get("/{thread_id}/audit", responses=ERRORS)
async def get_audit(thread_id: ThreadId, svc: Svc, who: Caller) -> AuditDocument:
    """The thread's tool calls, oldest first: step, agent, tool, arguments (secrets
    redacted), status, result size, duration and the approval that allowed each."""
    await guard(svc, who, thread_id, "runs")
    calls = await svc.agent.audit.calls(thread_id)
    if not calls:
        await get_snapshot(svc.graph, thread_id)  # 404 for a thread that does not exist
    return AuditDocument.model_validate(
        {"thread_id": thread_id, "calls": [asdict(c) for c in calls]}
    )


@router.post("/{thread_id}/fork", responses=ERRORS)
async def fork_thread(
    thread_id: ThreadId, body: ForkRequest, svc: Svc, who: Caller
) -> dict[str, str]:
    """Branch the thread at a checkpoint with state updates; its next run continues there."""
    await guard(svc, who, thread_id, "runs")
    await get_snapshot(svc.graph, thread_id)
    async with svc.runs.locked(thread_id):
        # Under the lock, where pruning cannot remove the checkpoint before it is branched.
        at = await svc.graph.aget_state(thread_config(thread_id, body.checkpoint_id))
        if at.created_at is None:
            raise ThreadNotFoundError(f"{thread_id}@{body.checkpoint_id}")
        try:
            new_id = await fork(
                svc.graph, thread_id, body.checkpoint_id, body.values, as_node=body.as_node
            )
        except InvalidUpdateError as exc:
            raise InvalidDecisionError(f"cannot apply these values: {exc}") from None
    return {"thread_id": thread_id, "checkpoint_id": new_id}
