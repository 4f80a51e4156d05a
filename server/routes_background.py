"""Background runs and crons: queued for the workers (`graphs.queue`), streamed from any server.

A background run is checked as a streamed one is (the same errors, at once), then queued and
answered with 202. Its events are read from its log (`graphs.run_log`), so any server can
stream them, from the first (a late join), or from the one after `Last-Event-ID` (or
`?after=`): every event carries its number as its SSE id.
"""

from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import StreamingResponse

from app.auth import Principal
from app.errors import (
    ConfigError,
    CronNotFoundError,
    RunEndedError,
    RunNotFoundError,
)
from graphs import crons
from graphs.budgets import budgeted
from graphs.driver import (
    RunOrder,
    check_model,
    continue_check,
    pending_decision_check,
    refuse_waiting,
)
from graphs.queue import cancel, enqueue, new_run_id
from graphs.run_log import RunRecord, RunStatus, follow, get_run, list_runs
from graphs.runs import new_thread_id
from graphs.threads import thread_context
from nodes.context import Context
from server.auth import Caller, claim, guard, needs
from server.deps import Services
from server.routes_runs import ERRORS, Svc, ThreadId
from server.schemas import BackgroundRun, BackgroundRunRequest, Cron, CronRequest
from server.sse import format_event

router = APIRouter(prefix="/api/v1", tags=["background runs"])
RunId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
STREAM_DOC: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "metadata, then the run's events from the first (or after "
        "Last-Event-ID / ?after=), each with its number as SSE id, until the run ends.",
    },
    **ERRORS,
}


def run_path(thread_id: str, run_id: str) -> str:
    """The URL path of a background run, the thread id percent-encoded (an HTTP header
    holds only Latin-1)."""
    return f"/api/v1/threads/{quote(thread_id, safe='')}/runs/{run_id}"


def _document(record: RunRecord) -> BackgroundRun:
    stream_url = f"{run_path(record.thread_id, record.run_id)}/stream"
    return BackgroundRun(**record.public(), stream_url=stream_url)


async def _order(
    svc: Services, who: Principal, thread_id: str, body: BackgroundRunRequest, *, new_thread: bool
) -> RunOrder:
    """Check what the run asks as a streamed run is checked (see `graphs.driver.claim_run`);
    the worker checks again when it starts the run."""
    if body.question is not None:
        await claim(svc, who, thread_id)
        options = body.overrides()
        # A bad option, or a model that cannot be loaded, fails here, not in the worker.
        await check_model(Context.from_settings(svc.settings, **options).model)
        if not new_thread:
            await refuse_waiting(svc.graph, thread_id)
        return RunOrder(
            thread_id=thread_id,
            request=body.question,
            options=options,
            new_thread=new_thread,
            multitask=body.multitask_strategy,
        )
    if body.resume is not None:
        await guard(svc, who, thread_id, "approvals")
        decision = {**body.resume.model_dump(), "by": who.label}
        context = await thread_context(svc.graph, svc.settings, thread_id, {})
        roster = svc.agent.toolbox.roster()
        await pending_decision_check(svc.graph, thread_id, decision, context=context, roster=roster)
        return RunOrder(thread_id=thread_id, decision=decision)
    await guard(svc, who, thread_id, "runs")
    await continue_check(svc.graph, thread_id)
    return RunOrder(thread_id=thread_id, proceed=True)


async def queue_run(svc: Services, who: Principal, order: RunOrder) -> RunRecord:
    """Queue a checked run for the workers, as `who`; return its row. A key with a daily
    budget is checked now, the run capped to what it has left and charged what it spends
    (`graphs.budgets`); the worker checks the key again when it starts the run.

    Raises:
        BudgetExceededError: the key spent its daily budget already.
    """
    run_id = new_run_id()
    if who.has_budget:
        order = await budgeted(svc.keys, svc.graph, svc.settings, order, who)
    async with svc.agent.db.pool.connection() as conn, conn.transaction():
        await enqueue(
            svc.queue,
            conn,
            order,
            run_id=run_id,
            started_by=who.label,
            tenant=who.tenant,
            charge_key=who.key_id,
        )
    record = await get_run(svc.agent.db.pool, run_id)
    assert record is not None
    return record


async def _queue(
    svc: Services, who: Principal, order: RunOrder, response: Response
) -> BackgroundRun:
    record = await queue_run(svc, who, order)
    response.headers["Location"] = run_path(order.thread_id, record.run_id)
    return _document(record)


async def background_run(svc: Services, who: Principal, thread_id: str, run_id: str) -> RunRecord:
    """The thread's background run, when the principal may see the thread.

    Raises:
        ThreadNotFoundError: the thread is another tenant's.
        RunNotFoundError: the thread has no such run.
    """
    await guard(svc, who, thread_id, "runs")
    record = await get_run(svc.agent.db.pool, run_id)
    if record is None or record.thread_id != thread_id:
        raise RunNotFoundError(thread_id, run_id)
    return record


@router.post("/runs", status_code=202, responses=ERRORS)
async def start_on_new_thread(
    body: BackgroundRunRequest, svc: Svc, who: Caller, response: Response
) -> BackgroundRun:
    """Start a run on a new thread in the background; 202 with the run (status `queued`)."""
    if body.question is None:
        raise ConfigError("a new thread takes a question: resume or continue a thread's run")
    thread_id = new_thread_id()
    order = await _order(svc, who, thread_id, body, new_thread=True)
    return await _queue(svc, who, order, response)


@router.post("/threads/{thread_id}/runs", status_code=202, responses=ERRORS)
async def start(
    thread_id: ThreadId, body: BackgroundRunRequest, svc: Svc, who: Caller, response: Response
) -> BackgroundRun:
    """Start a run of the thread in the background: a question, the answer to its pending
    approval, or a continue. 202 with the run; the thread's background runs execute one
    after another, in the order they came."""
    order = await _order(svc, who, thread_id, body, new_thread=False)
    return await _queue(svc, who, order, response)


@router.get("/threads/{thread_id}/runs", responses=ERRORS)
async def runs_of(
    thread_id: ThreadId,
    svc: Svc,
    who: Caller,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[BackgroundRun]:
    """The thread's background runs, newest first."""
    await guard(svc, who, thread_id, "runs")
    found = await list_runs(svc.agent.db.pool, thread_id=thread_id, limit=limit)
    return [_document(r) for r in found]


@router.get("/runs", responses=ERRORS)
async def all_runs(
    svc: Svc,
    who: Caller,
    status: Annotated[RunStatus | None, Query(description="Only runs in this status.")] = None,
    cron_id: Annotated[
        str | None, Query(max_length=64, description="Only this cron's firings.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[BackgroundRun]:
    """Background runs of every thread (the caller's tenant's), newest first: the queue."""
    needs(who, "runs")
    tenant = who.tenant_filter
    found = await list_runs(
        svc.agent.db.pool, cron_id=cron_id, status=status, tenant=tenant, limit=limit
    )
    return [_document(r) for r in found]


@router.get("/threads/{thread_id}/runs/{run_id}", responses=ERRORS)
async def run_of(thread_id: ThreadId, run_id: RunId, svc: Svc, who: Caller) -> BackgroundRun:
    """One background run: its status, attempts, error and times."""
    return _document(await background_run(svc, who, thread_id, run_id))


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", status_code=202, responses=ERRORS)
async def cancel_run(thread_id: ThreadId, run_id: RunId, svc: Svc, who: Caller) -> BackgroundRun:
    """Cancel a background run: a queued one never starts; a running one stops where it is,
    and the thread keeps every finished step (continue it to go on). 409 once it ended."""
    record = await background_run(svc, who, thread_id, run_id)
    if not await cancel(svc.queue, svc.agent.db.pool, record):
        raise RunEndedError(run_id, record.status)
    return _document(await background_run(svc, who, thread_id, run_id))


@router.get(
    "/threads/{thread_id}/runs/{run_id}/stream",
    response_class=StreamingResponse,
    responses=STREAM_DOC,
)
async def stream_run(
    thread_id: ThreadId,
    run_id: RunId,
    svc: Svc,
    who: Caller,
    after: Annotated[int, Query(ge=0, description="Send the events after this number.")] = 0,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Stream a background run's events, from whichever server: those already written, then
    each as it comes, until the run ends (or waits for a person)."""
    record = await background_run(svc, who, thread_id, run_id)
    if last_event_id is not None and last_event_id.isdigit():
        after = max(after, int(last_event_id))

    async def events() -> AsyncIterator[str]:
        yield format_event("metadata", {"thread_id": thread_id, "run_id": run_id})
        async for item in follow(svc.agent.db.pool, svc.feed, record.run_id, after=after):
            if item is None:
                yield ": keep-alive\n\n"
                continue
            seq, event = item
            yield f"id: {seq}\n" + format_event(str(event["event"]), event)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/crons", status_code=201, responses=ERRORS)
async def create_cron(body: CronRequest, svc: Svc, who: Caller) -> Cron:
    """Schedule a question: each firing is a background run, on a new thread or on
    `thread_id`. Fired by the queue workers, exactly once each, UTC."""
    needs(who, "runs")
    Context.from_settings(svc.settings, **body.overrides())
    if body.thread_id is not None:
        await claim(svc, who, body.thread_id)
    stored = await crons.create_cron(
        svc.agent.db.pool,
        schedule=body.schedule,
        question=body.question,
        thread_id=body.thread_id,
        options=body.overrides(),
        started_by=who.label,
        tenant=who.tenant,
        key_id=who.key_id,
    )
    return Cron(**stored)


@router.get("/crons", responses=ERRORS)
async def list_crons(svc: Svc, who: Caller) -> list[Cron]:
    """Every cron (the caller's tenant's), the soonest to fire first."""
    needs(who, "runs")
    tenant = who.tenant_filter
    return [Cron(**c) for c in await crons.list_crons(svc.agent.db.pool, tenant=tenant)]


@router.delete("/crons/{cron_id}", status_code=204, responses=ERRORS)
async def delete_cron(
    cron_id: Annotated[str, Path(min_length=1, max_length=64)], svc: Svc, who: Caller
) -> None:
    """Stop a cron (runs it fired stay)."""
    needs(who, "runs")
    tenant = who.tenant_filter
    if not await crons.delete_cron(svc.agent.db.pool, cron_id, tenant=tenant):
        raise CronNotFoundError(cron_id)
