"""The approvals inbox: every thread waiting for a person, and approve / reject."""

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query

from graphs.inbox import list_pending
from server.auth import Caller, needs
from server.deps import result_of
from server.routes_runs import ERRORS, Svc, ThreadId
from server.routes_runs import resume_thread as resume
from server.schemas import PendingApproval, RejectBody, RunResult

router = APIRouter(prefix="/api/v1/approvals", tags=["approvals"])


@router.get("", responses=ERRORS)
async def list_approvals(
    svc: Svc,
    who: Caller,
    status: Annotated[Literal["pending"], Query()] = "pending",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[PendingApproval]:
    """List the threads waiting for a decision, longest waiting first.

    Every waiting thread is listed, whichever process stopped it (this server, another
    replica, the CLI): the list is read from the checkpoints. Each shows its deadline
    (`approval_timeout`), the time left, and whether the deadline escalated it.
    """
    needs(who, "runs")
    rows = await list_pending(
        svc.graph,
        svc.agent.db.pool,
        limit=limit,
        visible=None if who.sees_everything else lambda ids: svc.keys.visible(ids, who),
    )
    return [
        PendingApproval(
            thread_id=r["thread_id"],
            payload=r["payload"],
            waiting_since=r["waiting_since"].isoformat(),
            waiting_s=r["waiting_s"],
            deadline=r["deadline"].isoformat() if r["deadline"] else None,
            time_left_s=r["time_left_s"],
            escalated=r["escalated"],
            escalation=r["escalation"],
        )
        for r in rows
    ]


@router.post("/{thread_id}/approve", responses=ERRORS)
async def approve(thread_id: ThreadId, svc: Svc, who: Caller) -> RunResult:
    """Approve and wait for the run's end or its next interrupt."""
    handle = await resume(svc, who, thread_id, {"decision": "approve"})
    return await result_of(svc, handle)


@router.post("/{thread_id}/reject", responses=ERRORS)
async def reject(
    thread_id: ThreadId, svc: Svc, who: Caller, body: Annotated[RejectBody | None, Body()] = None
) -> RunResult:
    """Reject (with a reason) and wait for the thread to close."""
    reason = body.reason if body else None
    handle = await resume(svc, who, thread_id, {"decision": "reject", "reason": reason})
    return await result_of(svc, handle)
