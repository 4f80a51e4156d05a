"""Runs of the LangGraph Agent API: streamed (`values`, `updates`, `custom`, `messages-tuple`,
`messages`, `events`, …) or waited for, on a thread or a new one; and background runs, which
are agentgraph's own (`graphs.queue`): the same rows, workers and cancel as
`/api/v1/threads/{id}/runs`.

A run takes the thread's lock and its checks through the one run driver
(`graphs.driver.claim_run`), so it refuses what every other surface refuses, with the same
errors. `input` is the graph's input (`{"request": "…"}`); `command={"resume": …}` answers a
pending approval; neither continues a run that was cut off. `context` takes the run options.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from app.auth import Principal
from app.errors import AgentGraphError, ConfigError
from graphs.budgets import budgeted, charge
from graphs.driver import ClaimedRun, RunOrder, claim_run
from graphs.modes import MODES, jsonable
from graphs.multitask import Strategy
from graphs.queue import cancel, new_run_id
from graphs.run_log import RunRecord, follow, list_runs
from graphs.runs import new_thread_id
from graphs.thread_records import get_record, touch_record
from server.agent_api.assistants import ASSISTANT_ID, resolve
from server.agent_api.threads import found, snapshot_of
from server.auth import Caller, claim, guard
from server.deps import Services
from server.routes_background import background_run, queue_run
from server.routes_runs import ERRORS, Svc, ThreadId
from server.schemas import ID_PATTERN, MAX_QUESTION_CHARS, RunOptions, StorableText
from server.sse import format_event

logger = logging.getLogger(__name__)

router = APIRouter(tags=["LangGraph Agent API"])
RunId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
RUN_STATUS = {
    "queued": "pending",
    "running": "running",
    "interrupted": "interrupted",
    "done": "success",
    "rejected": "success",
    "failed": "error",
    "cancelled": "interrupted",
}
"""agentgraph's run statuses as LangGraph's."""


class GraphInput(BaseModel):
    """The graph's input."""

    model_config = ConfigDict(extra="forbid")

    request: StorableText = Field(min_length=1, max_length=MAX_QUESTION_CHARS)


class RunCreate(BaseModel):
    """The body of a run, as `langgraph_sdk` sends it."""

    model_config = ConfigDict(extra="ignore")

    assistant_id: str = Field(min_length=1, max_length=200, pattern=ID_PATTERN)
    input: GraphInput | None = Field(
        default=None, description='The graph\'s input: {"request": "the question"}.'
    )
    command: dict[str, Any] | None = Field(
        default=None, description='{"resume": the approval decision}.'
    )
    context: RunOptions | None = Field(default=None, description="The run options.")
    config: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: str | list[str] = "values"
    stream_subgraphs: bool = False
    interrupt_before: str | list[str] | None = None
    interrupt_after: str | list[str] | None = None
    checkpoint_id: str | None = None
    checkpoint: dict[str, Any] | None = None
    multitask_strategy: Strategy = "reject"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_disconnect: Literal["cancel", "continue"] = "cancel"

    def modes(self) -> list[str]:
        """The stream modes asked for.

        Raises:
            ConfigError: one that is not served.
        """
        modes = [self.stream_mode] if isinstance(self.stream_mode, str) else self.stream_mode
        unknown = sorted(set(modes) - MODES)
        if unknown:
            served = ", ".join(sorted(MODES))
            raise ConfigError(f"stream_mode {', '.join(unknown)} is not served; served: {served}")
        return modes or ["values"]


def order_of(body: RunCreate, thread_id: str, who: Principal) -> RunOrder:
    """The run order a body asks for.

    Raises:
        ConfigError: what agentgraph does not do (interrupt_before, a start checkpoint, a
            command other than resume, an input other than `request`).
    """
    resolve(body.assistant_id)
    if body.interrupt_before or body.interrupt_after:
        raise ConfigError(
            "interrupt_before and interrupt_after are not served: the graph stops for "
            "approval by its own policy (context.approval: always)"
        )
    if body.checkpoint_id or body.checkpoint:
        raise ConfigError(
            "a run from a chosen checkpoint is not served: POST /threads/{id}/state with the "
            "checkpoint writes one to run on"
        )
    options = body.context.overrides() if body.context is not None else {}
    if body.command is not None:
        given = {k for k, v in body.command.items() if v not in (None, [], (), {})}
        if given != {"resume"}:
            raise ConfigError("command takes only resume here (goto and update are not served)")
        if body.input is not None:
            raise ConfigError("give input or command, not both")
        decision = body.command["resume"]
        if isinstance(decision, dict):
            decision = {**decision, "by": who.label}
        return RunOrder(thread_id=thread_id, decision=decision)
    if body.input is None:
        return RunOrder(thread_id=thread_id, proceed=True)
    return RunOrder(
        thread_id=thread_id,
        request=body.input.request,
        options=options,
        multitask=body.multitask_strategy,
    )


async def _thread_for(svc: Services, who: Principal, thread_id: str | None, body: RunCreate) -> str:
    """The run's thread: a new one when none is named, made when `if_not_exists=create`."""
    if thread_id is None:
        thread_id = new_thread_id()
        await claim(svc, who, thread_id)
        await touch_record(svc.agent.db.pool, thread_id)
        return thread_id
    if await get_record(svc.agent.db.pool, thread_id) is None:
        if body.if_not_exists != "create":
            await found(svc, who, thread_id)  # 404
        await claim(svc, who, thread_id)
        await touch_record(svc.agent.db.pool, thread_id)
        return thread_id
    if body.input is not None:
        await claim(svc, who, thread_id)
    else:
        await guard(svc, who, thread_id, "approvals" if body.command else "runs")
    await touch_record(svc.agent.db.pool, thread_id)
    return thread_id


async def _claim(
    svc: Services, who: Principal, thread_id: str | None, body: RunCreate
) -> tuple[ClaimedRun, contextlib.AsyncExitStack]:
    svc.runs.check_running()
    thread_id = await _thread_for(svc, who, thread_id, body)
    order = order_of(body, thread_id, who)
    roster = svc.agent.toolbox.roster()
    since = time.time()
    if who.has_budget:  # checked now, capped to what is left, charged when it ends
        order = await budgeted(svc.keys, svc.graph, svc.settings, order, who)
    stack = contextlib.AsyncExitStack()
    try:
        # As a streamed run of the native API: one of the key's run slots, the thread's
        # lock and checks, then one of the process's run slots.
        await stack.enter_async_context(svc.runs.key_slot(who))
        claimed = await stack.enter_async_context(
            claim_run(svc.graph, svc.runs.locks, svc.settings, order, roster=roster)
        )
        if who.key_id is not None and who.has_budget:  # under the lock still when it runs
            stack.push_async_callback(charge, svc.keys, svc.graph, thread_id, who.key_id, since)
        await svc.runs.slots.acquire()
        stack.callback(svc.runs.slots.release)
    except BaseException:
        await stack.aclose()
        raise
    return claimed, stack


class _Release:
    """Ends a streamed run's claim once, whoever asks first (the stream's end, or the
    response's background task when the client left before the body began): it waits for
    the run's own task (`run`) to end, then closes the claim's exit stack (the charge, the
    slots, the thread's lock). It goes on to its end even when the one asking is cancelled,
    as a client that leaves cancels the stream's task: neither what the run stores as it
    stops, nor its charge, nor the lock's return may be cut short by that."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self._stack = stack
        self.run: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    async def __call__(self) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        if self.run is not None:
            self.run.cancel()  # a no-op once it ended
            await asyncio.wait([self.run])
        await self._stack.aclose()


_END = object()
"""The end of a streamed run's parts."""


async def _stream(
    claimed: ClaimedRun,
    release: _Release,
    modes: list[str],
    subgraphs: bool,
) -> AsyncIterator[str]:
    """The SSE events of a run, which runs in a task of its own: a client that leaves
    cancels this generator, and the run is then stopped once and ends as any stopped run
    does (its steps and its record stored) before the claim is released."""
    run_id = new_run_id()
    parts: asyncio.Queue[Any] = asyncio.Queue()

    async def run() -> None:
        try:
            streamed = claimed.stream_modes(modes, subgraphs=subgraphs, run_id=run_id)
            async with contextlib.aclosing(streamed):  # type: ignore[type-var]
                async for part in streamed:
                    parts.put_nowait(part)
        except AgentGraphError as exc:
            parts.put_nowait(("error", {"error": type(exc).__name__, "message": str(exc)}))
        except Exception as exc:
            logger.exception("run %s of thread %s failed", run_id, claimed.thread_id)
            parts.put_nowait(("error", {"error": type(exc).__name__, "message": str(exc)}))
        finally:
            parts.put_nowait(_END)

    try:
        yield format_event("metadata", {"run_id": run_id, "attempt": 1})
        release.run = asyncio.create_task(run(), name=f"agent-api-run-{run_id}")
        while (part := await parts.get()) is not _END:
            name, data = part
            yield format_event(name, data)
    finally:
        await release()


def _streaming(
    claimed: ClaimedRun, stack: contextlib.AsyncExitStack, body: RunCreate
) -> StreamingResponse:
    release = _Release(stack)
    return StreamingResponse(
        _stream(claimed, release, body.modes(), body.stream_subgraphs),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        # Also when the client left before the body began: the thread's lock goes back.
        background=BackgroundTask(release),
    )


@router.post("/threads/{thread_id}/runs/stream", response_class=StreamingResponse, responses=ERRORS)
async def stream_on_thread(
    thread_id: ThreadId, body: RunCreate, svc: Svc, who: Caller
) -> StreamingResponse:
    """Run the thread and stream the modes asked for. The run stops if the client leaves;
    the thread keeps every finished step."""
    body.modes()  # a mode that is not served: 422 before the thread is touched
    claimed, stack = await _claim(svc, who, thread_id, body)
    return _streaming(claimed, stack, body)


@router.post("/runs/stream", response_class=StreamingResponse, responses=ERRORS)
async def stream_on_new_thread(body: RunCreate, svc: Svc, who: Caller) -> StreamingResponse:
    """Run on a new thread (which stays) and stream the modes asked for."""
    body.modes()
    claimed, stack = await _claim(svc, who, None, body)
    return _streaming(claimed, stack, body)


async def _values(svc: Services, thread_id: str) -> dict[str, Any]:
    """The thread's values, with `__interrupt__` when it waits for a person."""
    snapshot = await snapshot_of(svc, thread_id)
    values: dict[str, Any] = jsonable(snapshot.values) if snapshot is not None else {}
    if snapshot is not None and snapshot.interrupts:
        values["__interrupt__"] = jsonable(snapshot.interrupts)
    return values


async def _wait(svc: Services, who: Principal, thread_id: str | None, body: RunCreate) -> Any:
    claimed, stack = await _claim(svc, who, thread_id, body)
    async with stack:
        try:
            async for _ in claimed.stream_modes(["values"], run_id=new_run_id()):
                pass
        except AgentGraphError:
            raise
        except Exception as exc:
            # As LangGraph's server answers a run that raised; the thread keeps its steps.
            logger.exception("run of thread %s failed", claimed.thread_id)
            return {"__error__": {"error": type(exc).__name__, "message": str(exc)}}
    return await _values(svc, claimed.thread_id)


@router.post("/threads/{thread_id}/runs/wait", responses=ERRORS)
async def wait_on_thread(thread_id: ThreadId, body: RunCreate, svc: Svc, who: Caller) -> Any:
    """Run the thread to its end or its next interrupt; return its values (with
    `__interrupt__` when it waits for a person)."""
    return await _wait(svc, who, thread_id, body)


@router.post("/runs/wait", responses=ERRORS)
async def wait_on_new_thread(body: RunCreate, svc: Svc, who: Caller) -> Any:
    """Run on a new thread to the end or the first interrupt; return its values."""
    return await _wait(svc, who, None, body)


def _run_document(record: RunRecord) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "thread_id": record.thread_id,
        "assistant_id": ASSISTANT_ID,
        "created_at": record.created_at.isoformat(),
        "updated_at": (record.ended_at or record.started_at or record.created_at).isoformat(),
        "status": RUN_STATUS[record.status],
        "metadata": {"agentgraph_status": record.status, "error": record.error},
        "multitask_strategy": record.run_order.get("multitask") or "reject",
        "kwargs": {},
    }


@router.post("/threads/{thread_id}/runs", responses=ERRORS)
async def create_background(thread_id: ThreadId, body: RunCreate, svc: Svc, who: Caller) -> Any:
    """Queue a background run of the thread for the workers (as
    `POST /api/v1/threads/{id}/runs`)."""
    thread_id = await _thread_for(svc, who, thread_id, body)
    order = order_of(body, thread_id, who)
    return _run_document(await queue_run(svc, who, order))


@router.get("/threads/{thread_id}/runs", responses=ERRORS)
async def list_background(
    thread_id: ThreadId, svc: Svc, who: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 10
) -> list[dict[str, Any]]:
    """The thread's background runs, newest first."""
    await guard(svc, who, thread_id, "runs")
    records = await list_runs(svc.agent.db.pool, thread_id=thread_id, limit=limit)
    return [_run_document(r) for r in records]


@router.get("/threads/{thread_id}/runs/{run_id}", responses=ERRORS)
async def get_background(thread_id: ThreadId, run_id: RunId, svc: Svc, who: Caller) -> Any:
    """One background run."""
    return _run_document(await background_run(svc, who, thread_id, run_id))


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", responses=ERRORS)
async def cancel_background(thread_id: ThreadId, run_id: RunId, svc: Svc, who: Caller) -> Any:
    """Cancel a background run (a queued one never starts, a running one stops where it is)."""
    record = await background_run(svc, who, thread_id, run_id)
    await cancel(svc.queue, svc.agent.db.pool, record)
    return _run_document(await background_run(svc, who, thread_id, run_id))


@router.get("/threads/{thread_id}/runs/{run_id}/join", responses=ERRORS)
async def join_background(thread_id: ThreadId, run_id: RunId, svc: Svc, who: Caller) -> Any:
    """Wait for a background run to end; return the thread's values."""
    record = await background_run(svc, who, thread_id, run_id)
    async for _ in follow(svc.agent.db.pool, svc.feed, record.run_id):
        pass
    return await _values(svc, thread_id)


@router.get(
    "/threads/{thread_id}/runs/{run_id}/stream",
    response_class=StreamingResponse,
    responses=ERRORS,
)
async def join_background_stream(
    thread_id: ThreadId, run_id: RunId, svc: Svc, who: Caller
) -> StreamingResponse:
    """A background run's events, from the first, as `custom` events (they are agentgraph's
    events; the workers keep no other mode)."""
    record = await background_run(svc, who, thread_id, run_id)

    async def events() -> AsyncIterator[str]:
        yield format_event("metadata", {"run_id": run_id, "attempt": record.attempts or 1})
        async for item in follow(svc.agent.db.pool, svc.feed, run_id):
            if item is None:
                yield ": heartbeat\n\n"
                continue
            seq, event = item
            yield f"id: {seq}\n" + format_event("custom", event)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
