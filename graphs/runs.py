"""Start, resume, inspect and fork runs: the one run API under the CLI, the server and notebooks."""

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, StateSnapshot
from typing_extensions import TypedDict

from app.db import NEW_THREAD, UNFLUSHED_WRITES, Saver
from app.errors import (
    AgentGraphError,
    ConfigError,
    ModelError,
    NothingToContinueError,
    NothingToResumeError,
    ThreadBusyError,
    ThreadNotFoundError,
)
from app.models import get_chat_model, is_loaded
from graphs.agent import AgentGraph
from nodes.approval import parse_decision
from nodes.context import Context
from nodes.events import EventSink, event_sink
from nodes.finalize import build_report
from nodes.schemas import ApprovalDecision, Citation, Plan, PlanRevision
from nodes.state import InputState, RunReport, State

logger = logging.getLogger(__name__)

ThreadStatus = Literal["running", "interrupted", "done", "rejected", "failed"]
RunEvent = dict[str, Any]


class ThreadView(TypedDict):
    """Where a thread stands, as every surface shows it."""

    thread_id: str
    status: ThreadStatus
    request: str | None
    answer: str | None
    citations: list[Citation]
    plan: Plan | None
    plan_history: list[PlanRevision]
    pending_approval: dict[str, Any] | None
    report: RunReport | None
    checkpoint_id: str | None
    next: list[str]


class CheckpointInfo(TypedDict):
    """One checkpoint of a thread, for history listings and forks."""

    checkpoint_id: str
    parent_id: str | None
    created_at: str | None
    step: int | None
    source: str | None
    next: list[str]
    writes: list[str]


def new_thread_id() -> str:
    """Return a fresh thread id."""
    return uuid.uuid4().hex


def thread_config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    """Return the config that addresses a thread (and optionally one of its checkpoints)."""
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _interrupt_event(snapshot: StateSnapshot, thread_id: str) -> RunEvent | None:
    if not snapshot.interrupts:
        return None
    first = snapshot.interrupts[0]
    return {
        "event": "interrupt",
        "thread_id": thread_id,
        "interrupt_id": first.id,
        "payload": first.value,
    }


async def run_events(
    graph: AgentGraph,
    *,
    sink: EventSink,
    thread_id: str,
    context: Context,
    request: str | None = None,
    resume: ApprovalDecision | None = None,
    proceed: bool = False,
    new_thread: bool = False,
) -> None:
    """Run (or resume, or continue) a thread to its end or its next interrupt, handing each
    event to `sink` as it happens: plan_update, handoff, delta, step_result, interrupt,
    final, and error when the run fails.

    Exactly one of `request`, `resume` and `proceed` is given. `proceed` runs on from the
    thread's latest checkpoint with no new input: what a run cut off by a stop or a crash
    left to do. Tasks that finished before the stop are not run again. `new_thread` says
    the caller just made the thread id up, so the run does not look for its checkpoint.
    `sink` is called in the event loop's thread, also for events of code that runs in a
    worker thread.
    """
    payload: InputState | Command[Any] | None
    if sum((request is not None, resume is not None, proceed)) != 1:
        raise ValueError("give exactly one of a request, a resume value and proceed=True")
    if resume is not None:
        payload = Command(resume=dict(resume))
    elif request is not None:
        payload = InputState(request=request)
    else:
        payload = None
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    finished = False

    def put(event: RunEvent) -> None:
        nonlocal finished
        finished = finished or event["event"] == "final"
        if threading.get_ident() == loop_thread:
            sink(event)
        else:
            loop.call_soon_threadsafe(sink, event)

    token = event_sink.set(put)
    try:
        # The nodes' events reach `put` directly (`nodes.events`), and LangGraph streams only
        # the state's values, its cheapest mode. Streaming `custom` made a server run take
        # about a fifth more CPU, `updates` more still. A run that stopped without its final
        # event is asked for its interrupt.
        config = thread_config(thread_id)
        if new_thread:
            config["configurable"][NEW_THREAD] = True
        # The Postgres saver need not hold a super-step up until its checkpoint is committed
        # (LangGraph waits for each checkpoint before it sends the next): the checkpoints
        # queue, in order, and the run waits for all of them at its end.
        saver = graph.checkpointer if isinstance(graph.checkpointer, Saver) else None
        if saver is not None:
            config["configurable"][UNFLUSHED_WRITES] = True
        try:
            async for _ in graph.astream(payload, config, context=context, stream_mode="values"):
                pass
        finally:
            if saver is not None:
                await saver.flush(thread_id)
        if not finished:
            event = _interrupt_event(await graph.aget_state(thread_config(thread_id)), thread_id)
            if event is not None:
                put(event)
    except AgentGraphError as exc:
        put({"event": "error", "type": type(exc).__name__, "message": str(exc)})
    except Exception as exc:
        # The checkpoint keeps everything up to the failing node; report and keep going.
        logger.exception("run %s failed", thread_id)
        put({"event": "error", "type": type(exc).__name__, "message": str(exc)})
    finally:
        event_sink.reset(token)


async def stream_events(
    graph: AgentGraph,
    *,
    thread_id: str,
    context: Context,
    request: str | None = None,
    resume: ApprovalDecision | None = None,
    proceed: bool = False,
    new_thread: bool = False,
) -> AsyncIterator[RunEvent]:
    """Run (or resume, or continue) a thread and yield its events, as `run_events` hands
    them over; the arguments are `run_events`'. Closing the iterator early stops the run.
    """
    events: asyncio.Queue[RunEvent | None] = asyncio.Queue()

    async def run() -> None:
        try:
            await run_events(
                graph,
                sink=events.put_nowait,
                thread_id=thread_id,
                context=context,
                request=request,
                resume=resume,
                proceed=proceed,
                new_thread=new_thread,
            )
        finally:
            events.put_nowait(None)

    task = asyncio.create_task(run(), name=f"run-{thread_id}")
    try:
        while (event := await events.get()) is not None:
            yield event
        await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _status(snapshot: StateSnapshot) -> ThreadStatus:
    if snapshot.interrupts:
        return "interrupted"
    if snapshot.next:
        return "running"
    status = snapshot.values.get("status")
    return status if status in ("done", "rejected", "failed") else "failed"


async def get_snapshot(graph: AgentGraph, thread_id: str) -> StateSnapshot:
    """Return the latest snapshot of a thread.

    Raises:
        ThreadNotFoundError: no checkpoint exists for the thread.
    """
    snapshot = await graph.aget_state(thread_config(thread_id))
    if snapshot.created_at is None and not snapshot.values:
        raise ThreadNotFoundError(thread_id)
    return snapshot


async def view_thread(
    graph: AgentGraph, thread_id: str, *, context: Context | None = None
) -> ThreadView:
    """Describe a thread: status, plan and its history, pending approval, answer, report.

    Raises:
        ThreadNotFoundError: no checkpoint exists for the thread.
    """
    snapshot = await get_snapshot(graph, thread_id)
    values: State = snapshot.values  # type: ignore[assignment]
    status = _status(snapshot)
    report = values.get("report")
    if report is None and values.get("usage"):
        partial = status if status in ("done", "rejected", "failed") else "done"
        report = build_report(values, context or Context(), partial)
    pending = snapshot.interrupts[0].value if snapshot.interrupts else None
    return ThreadView(
        thread_id=thread_id,
        status=status,
        request=values.get("request"),
        answer=values.get("answer") if status in ("done", "rejected", "failed") else None,
        citations=values.get("citations", []),
        plan=values.get("plan"),
        plan_history=values.get("plan_history", []),
        pending_approval=pending,
        report=report,
        checkpoint_id=snapshot.config["configurable"].get("checkpoint_id"),
        next=list(snapshot.next),
    )


async def pending_decision_check(
    graph: AgentGraph, thread_id: str, raw: object, *, context: Context
) -> ApprovalDecision:
    """Validate a resume value against a thread that must be waiting for one.

    Raises:
        ThreadNotFoundError: unknown thread.
        NothingToResumeError: the thread is not waiting for a decision.
        InvalidDecisionError: the decision or its edited plan is invalid.
    """
    snapshot = await get_snapshot(graph, thread_id)
    if not snapshot.interrupts:
        raise NothingToResumeError(thread_id, _status(snapshot))
    return parse_decision(raw, max_steps=context.max_steps)


async def check_model(spec: str) -> None:
    """Load a run's chat model now (it is cached), so a model that cannot be used fails the
    request that names it instead of every step of its run.

    Raises:
        ConfigError: the model cannot be loaded.
    """
    if is_loaded(spec):
        return
    try:
        await asyncio.to_thread(get_chat_model, spec)
    except ModelError as exc:
        raise ConfigError(f"bad run option: model {spec!r} cannot be used: {exc}") from None


async def continue_check(graph: AgentGraph, thread_id: str) -> None:
    """Check that a thread has steps left to run and waits for no decision.

    Whether a run holds the thread right now is the thread lock's business (`graphs.locks`).

    Raises:
        ThreadNotFoundError: unknown thread.
        ThreadBusyError: the thread waits for a decision: resume it instead.
        NothingToContinueError: the thread has nothing left to run.
    """
    snapshot = await get_snapshot(graph, thread_id)
    if snapshot.interrupts:
        raise ThreadBusyError(thread_id, "waits for approval: resume it instead of continuing")
    if not snapshot.next:
        raise NothingToContinueError(thread_id, _status(snapshot))


def run_state(view: ThreadView, *, running: bool) -> tuple[ThreadStatus, bool]:
    """Return a thread's status and whether it can be continued, knowing whether a run holds
    it now (`graphs.locks`).

    A thread that a run holds is running, whatever its latest checkpoint says (between a
    task's end and its step's checkpoint it can read as finished). A thread with steps left
    that no run holds and that awaits no decision was cut off: it can be continued.
    """
    if running:
        return "running", False
    return view["status"], bool(view["next"]) and view["pending_approval"] is None


def _writes(metadata: Any) -> list[str]:
    writes = metadata.get("writes")
    return [str(k) for k in writes] if isinstance(writes, dict) else []


async def history(
    graph: AgentGraph, thread_id: str, *, limit: int | None = None
) -> list[CheckpointInfo]:
    """List a thread's checkpoints, newest first.

    Raises:
        ThreadNotFoundError: no checkpoint exists for the thread.
    """
    items: list[CheckpointInfo] = []
    async for snap in graph.aget_state_history(thread_config(thread_id), limit=limit):
        metadata = snap.metadata or {}
        parent = (snap.parent_config or {}).get("configurable", {}).get("checkpoint_id")
        items.append(
            CheckpointInfo(
                checkpoint_id=snap.config["configurable"]["checkpoint_id"],
                parent_id=parent,
                created_at=snap.created_at,
                step=metadata.get("step"),
                source=metadata.get("source"),
                next=list(snap.next),
                writes=sorted(_writes(metadata)),
            )
        )
    if not items:
        raise ThreadNotFoundError(thread_id)
    return items


async def fork(
    graph: AgentGraph,
    thread_id: str,
    checkpoint_id: str,
    values: dict[str, Any] | None = None,
    *,
    as_node: str | None = None,
) -> str:
    """Branch a thread at a checkpoint, applying `values`; return the new checkpoint id.

    The old branch stays as it was; running the thread next continues from the new one.
    """
    config = await graph.aupdate_state(
        thread_config(thread_id, checkpoint_id), values or {}, as_node=as_node
    )
    new_id: str = config["configurable"]["checkpoint_id"]
    return new_id


async def stored_context(graph: AgentGraph, thread_id: str) -> Context | None:
    """Return the options the thread was last run with, if they were recorded."""
    snapshot = await get_snapshot(graph, thread_id)
    raw = snapshot.values.get("options")
    if not isinstance(raw, dict):
        return None
    known = set(Context.__dataclass_fields__)
    return Context(**{k: v for k, v in raw.items() if k in known})
