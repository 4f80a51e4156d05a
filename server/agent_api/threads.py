"""Threads of the LangGraph Agent API: create, get, search, update, delete; their state,
history and state updates, over agentgraph's checkpoints."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Response
from langgraph.errors import InvalidUpdateError
from langgraph.types import StateSnapshot
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.auth import Principal
from app.errors import (
    InvalidDecisionError,
    ThreadBusyError,
    ThreadExistsError,
    ThreadNotFoundError,
)
from graphs.modes import checkpoint_of, jsonable, thread_state
from graphs.retention import copy_thread, delete_thread, prune
from graphs.runs import new_thread_id, thread_config
from graphs.thread_records import (
    ThreadRecord,
    count_records,
    create_record,
    get_record,
    search_records,
    update_metadata,
)
from server.auth import Caller, claim, guard, needs
from server.deps import Services
from server.routes_runs import ERRORS, Svc, ThreadId
from server.schemas import ID_PATTERN, MAX_THREAD_ID_CHARS, THREAD_ID_PATTERN, refuse_nul

router = APIRouter(prefix="/threads", tags=["LangGraph Agent API"])
Metadata = Annotated[dict[str, Any], AfterValidator(refuse_nul)]
"""JSON that Postgres stores: no NUL character in it."""
ThreadStatus = Literal["idle", "busy", "interrupted", "error"]


class ThreadCreate(BaseModel):
    """`POST /threads`."""

    model_config = ConfigDict(extra="ignore")

    thread_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_THREAD_ID_CHARS, pattern=THREAD_ID_PATTERN
    )
    metadata: Metadata = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"


class ThreadSearch(BaseModel):
    """`POST /threads/search` and `/threads/count`."""

    model_config = ConfigDict(extra="ignore")

    metadata: Metadata = Field(default_factory=dict)
    status: ThreadStatus | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


CheckpointId = Annotated[str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)]
ThreadIdText = Annotated[
    str, Field(min_length=1, max_length=MAX_THREAD_ID_CHARS, pattern=THREAD_ID_PATTERN)
]


class CheckpointRef(BaseModel):
    """A checkpoint of the thread, by id."""

    model_config = ConfigDict(extra="ignore")

    checkpoint_id: CheckpointId


class StateUpdate(BaseModel):
    """`POST /threads/{id}/state`."""

    model_config = ConfigDict(extra="ignore")

    values: Metadata | None = None
    as_node: str | None = Field(default=None, max_length=200, pattern=ID_PATTERN)
    checkpoint_id: CheckpointId | None = None
    checkpoint: CheckpointRef | None = None


class HistoryQuery(BaseModel):
    """`POST /threads/{id}/history`."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=10, ge=1, le=1000)
    before: CheckpointRef | CheckpointId | None = None
    metadata: Metadata | None = None
    checkpoint: CheckpointRef | None = None


class CheckpointQuery(BaseModel):
    """`POST /threads/{id}/state/checkpoint`."""

    model_config = ConfigDict(extra="ignore")

    checkpoint: CheckpointRef


async def snapshot_of(svc: Services, thread_id: str) -> StateSnapshot | None:
    """The thread's latest snapshot; None before its first run."""
    snapshot = await svc.graph.aget_state(thread_config(thread_id))
    return snapshot if snapshot.created_at is not None else None


async def status_of(svc: Services, thread_id: str, snapshot: StateSnapshot | None) -> ThreadStatus:
    """What LangGraph's server calls the thread's status."""
    if await svc.runs.is_running(thread_id):
        return "busy"
    if snapshot is None:
        return "idle"
    if snapshot.interrupts:
        return "interrupted"
    return "error" if snapshot.values.get("status") == "failed" else "idle"


async def document(svc: Services, record: ThreadRecord) -> dict[str, Any]:
    """A thread as LangGraph's server shows it."""
    snapshot = await snapshot_of(svc, record.thread_id)
    interrupts: dict[str, list[Any]] = {}
    if snapshot is not None:
        for task in snapshot.tasks:
            if task.interrupts:
                interrupts[task.id] = jsonable(task.interrupts)
    return {
        "thread_id": record.thread_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "metadata": record.metadata,
        "status": await status_of(svc, record.thread_id, snapshot),
        "values": jsonable(snapshot.values) if snapshot is not None else None,
        "interrupts": interrupts,
    }


async def found(svc: Services, who: Principal, thread_id: str) -> ThreadRecord:
    """The thread the principal may see.

    Raises:
        ThreadNotFoundError: no such thread, or another tenant's.
    """
    await guard(svc, who, thread_id, "runs")
    record = await get_record(svc.agent.db.pool, thread_id)
    if record is None:
        raise ThreadNotFoundError(thread_id)
    return record


@router.post("", responses=ERRORS)
async def create(svc: Svc, who: Caller, body: ThreadCreate | None = None) -> dict[str, Any]:
    """Make a thread (its id given or new). 409 when it exists, unless `if_exists` is
    `do_nothing`: then it is returned as it is."""
    body = body or ThreadCreate()
    thread_id = body.thread_id or new_thread_id()
    await claim(svc, who, thread_id)
    created = await create_record(svc.agent.db.pool, thread_id, body.metadata)
    if not created and body.if_exists == "raise":
        raise ThreadExistsError(thread_id)
    return await document(svc, await found(svc, who, thread_id))


@router.post("/search", responses=ERRORS)
async def search(svc: Svc, who: Caller, body: ThreadSearch | None = None) -> list[dict[str, Any]]:
    """Threads whose metadata holds the given metadata (and with the status), the most
    recently updated first: made here, and run by any surface."""
    needs(who, "runs")
    body = body or ThreadSearch()
    tenant = who.tenant_filter
    documents: list[dict[str, Any]] = []
    offset = body.offset
    while len(documents) < body.limit:
        records = await search_records(
            svc.agent.db.pool,
            metadata=body.metadata,
            tenant=tenant,
            limit=body.limit,
            offset=offset,
        )
        for record in records:
            doc = await document(svc, record)
            if body.status is None or doc["status"] == body.status:
                documents.append(doc)
        if len(records) < body.limit or body.status is None:
            break
        offset += body.limit
    return documents[: body.limit]


class ThreadPrune(BaseModel):
    """`POST /threads/prune`."""

    model_config = ConfigDict(extra="ignore")

    thread_ids: list[
        Annotated[
            str, Field(min_length=1, max_length=MAX_THREAD_ID_CHARS, pattern=THREAD_ID_PATTERN)
        ]
    ] = Field(max_length=1000)
    strategy: Literal["delete", "keep_latest"] = "delete"


@router.post("/prune", responses=ERRORS)
async def prune_threads(body: ThreadPrune, svc: Svc, who: Caller) -> dict[str, int]:
    """Delete the threads wholly (`delete`), or prune each to what its next run needs
    (`keep_latest`: the latest checkpoint, branch heads and fork points, as
    `agentgraph threads prune`). Threads a run holds are skipped; `pruned_count` says how
    many were pruned."""
    for thread_id in body.thread_ids:
        await found(svc, who, thread_id)
    pool = svc.agent.db.pool
    if body.strategy == "keep_latest":
        report = await prune(pool, cutoff=datetime.now(UTC), thread_ids=body.thread_ids)
        return {"pruned_count": report.threads_pruned}
    pruned = 0
    for thread_id in body.thread_ids:
        try:
            await delete_thread(pool, thread_id)
        except ThreadBusyError:
            continue
        pruned += 1
    return {"pruned_count": pruned}


@router.post("/count", responses=ERRORS)
async def count(svc: Svc, who: Caller, body: ThreadSearch | None = None) -> int:
    """How many threads `search` finds (with a `status`, at most 1,000: each thread's status
    is read from its checkpoint)."""
    query = (body or ThreadSearch()).model_copy(update={"limit": 1000, "offset": 0})
    if query.status is None:
        needs(who, "runs")
        return await count_records(
            svc.agent.db.pool, metadata=query.metadata, tenant=who.tenant_filter
        )
    return len(await search(svc, who, query))


@router.get("/{thread_id}", responses=ERRORS)
async def get(thread_id: ThreadId, svc: Svc, who: Caller) -> dict[str, Any]:
    """The thread: metadata, status, values and pending interrupts."""
    return await document(svc, await found(svc, who, thread_id))


@router.patch("/{thread_id}", responses=ERRORS)
async def patch(
    thread_id: ThreadId, svc: Svc, who: Caller, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """Merge `metadata` into the thread's."""
    await found(svc, who, thread_id)
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidDecisionError("metadata must be a JSON object")
    try:
        refuse_nul(metadata)
    except ValueError as exc:
        raise InvalidDecisionError(f"metadata: {exc}") from None
    await update_metadata(svc.agent.db.pool, thread_id, metadata)
    return await get(thread_id, svc, who)


@router.delete("/{thread_id}", status_code=204, responses=ERRORS)
async def delete(thread_id: ThreadId, svc: Svc, who: Caller) -> Response:
    """Delete the thread wholly (409 while a run holds it)."""
    await found(svc, who, thread_id)
    await delete_thread(svc.agent.db.pool, thread_id)
    return Response(status_code=204)


@router.post("/{thread_id}/copy", responses=ERRORS)
async def copy(thread_id: ThreadId, svc: Svc, who: Caller) -> dict[str, Any]:
    """Copy the thread, checkpoints and metadata, to a new thread (the caller's tenant's);
    return the copy."""
    record = await found(svc, who, thread_id)
    new_id = new_thread_id()
    await claim(svc, who, new_id)
    await copy_thread(svc.agent.db.pool, thread_id, new_id)
    await create_record(svc.agent.db.pool, new_id, record.metadata)
    return await document(svc, await found(svc, who, new_id))


async def _state_at(
    svc: Services, who: Principal, thread_id: str, checkpoint_id: str | None
) -> dict[str, Any]:
    await found(svc, who, thread_id)
    snapshot = await svc.graph.aget_state(thread_config(thread_id, checkpoint_id))
    if checkpoint_id is not None and snapshot.created_at is None:
        raise ThreadNotFoundError(f"{thread_id}@{checkpoint_id}")
    return thread_state(snapshot)


@router.get("/{thread_id}/state", responses=ERRORS)
async def state(
    thread_id: ThreadId, svc: Svc, who: Caller, subgraphs: bool = False
) -> dict[str, Any]:
    """The thread's latest state: values, next nodes, tasks and their interrupts."""
    return await _state_at(svc, who, thread_id, None)


@router.get("/{thread_id}/state/{checkpoint_id}", responses=ERRORS)
async def state_at(
    thread_id: ThreadId,
    checkpoint_id: Annotated[str, Path(max_length=200, pattern=ID_PATTERN)],
    svc: Svc,
    who: Caller,
) -> dict[str, Any]:
    """The thread's state at one checkpoint."""
    return await _state_at(svc, who, thread_id, checkpoint_id)


@router.post("/{thread_id}/state/checkpoint", responses=ERRORS)
async def state_at_checkpoint(
    thread_id: ThreadId, body: CheckpointQuery, svc: Svc, who: Caller
) -> dict[str, Any]:
    """The thread's state at the checkpoint `{"checkpoint": {"checkpoint_id": …}}` names."""
    return await _state_at(svc, who, thread_id, body.checkpoint.checkpoint_id)


@router.post("/{thread_id}/state", responses=ERRORS)
async def update_state(
    thread_id: ThreadId, body: StateUpdate, svc: Svc, who: Caller
) -> dict[str, Any]:
    """Apply `values` to the thread's state (at a checkpoint, as a node), under its lock;
    the next run goes on from the checkpoint this writes."""
    await found(svc, who, thread_id)
    checkpoint_id = body.checkpoint_id or (
        body.checkpoint.checkpoint_id if body.checkpoint else None
    )
    async with svc.runs.locked(thread_id):
        try:
            config = await svc.graph.aupdate_state(
                thread_config(thread_id, checkpoint_id), body.values, as_node=body.as_node
            )
        except (InvalidUpdateError, ValueError, TypeError, KeyError) as exc:
            raise InvalidDecisionError(f"cannot apply these values: {exc}") from None
    return {"checkpoint": checkpoint_of(config)}


async def _history(
    svc: Services, who: Principal, thread_id: str, query: HistoryQuery
) -> list[dict[str, Any]]:
    await found(svc, who, thread_id)
    before = query.before.checkpoint_id if isinstance(query.before, CheckpointRef) else query.before
    at = query.checkpoint.checkpoint_id if query.checkpoint else None
    states = svc.graph.aget_state_history(
        thread_config(thread_id, at),
        limit=query.limit,
        before=thread_config(thread_id, before) if before else None,
        filter=query.metadata,
    )
    return [thread_state(s) async for s in states]


@router.post("/{thread_id}/history", responses=ERRORS)
async def history(
    thread_id: ThreadId, svc: Svc, who: Caller, body: HistoryQuery | None = None
) -> list[dict[str, Any]]:
    """The thread's states, newest first."""
    return await _history(svc, who, thread_id, body or HistoryQuery())


@router.get("/{thread_id}/history", responses=ERRORS)
async def history_get(
    thread_id: ThreadId,
    svc: Svc,
    who: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    before: Annotated[str | None, Query(max_length=200, pattern=ID_PATTERN)] = None,
) -> list[dict[str, Any]]:
    """The thread's states, newest first."""
    return await _history(svc, who, thread_id, HistoryQuery(limit=limit, before=before))
