"""What a thread holds: where it stands, its checkpoints, the options it ran with, forks.

Every surface describes a thread through `view_thread`, read from the graph's own state, so
the CLI, the HTTP API and the inbox never disagree on what a thread is waiting for.
"""

from typing import Any, Literal

from langgraph.types import StateSnapshot
from typing_extensions import TypedDict

from app.errors import ThreadNotFoundError
from app.settings import Settings
from graphs.agent import AgentGraph
from graphs.runs import thread_config
from nodes.context import Context
from nodes.finalize import build_report
from nodes.schemas import Citation, Critique, Plan, PlanRevision, StepResult
from nodes.state import RunReport, State

ThreadStatus = Literal["running", "interrupted", "done", "rejected", "failed"]


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
    results: list[StepResult]
    """The step results of every plan revision, in the order they came."""
    critique: Critique | None
    """The critic's latest verdict."""
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


def steps_left(snapshot: StateSnapshot) -> list[str]:
    """The nodes a run of the thread runs next: LangGraph's `next`, the tasks of the latest
    checkpoint's super-step that have not written yet. When every one of them has written
    and the run stopped before the next checkpoint (a crash, a stop or a client that left at
    that moment), LangGraph's `next` is empty though the run is not over: those tasks are
    named, whose writes a continue applies before it goes on. A finished run's checkpoint
    has no tasks."""
    return list(snapshot.next) or [task.name for task in snapshot.tasks]


def thread_status(snapshot: StateSnapshot) -> ThreadStatus:
    """Return what a snapshot says of its thread (a run holding it is `run_state`'s to add)."""
    if snapshot.interrupts:
        return "interrupted"
    if steps_left(snapshot):
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
    status = thread_status(snapshot)
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
        results=list(values.get("results", {}).values()),
        critique=values.get("critique"),
        checkpoint_id=snapshot.config["configurable"].get("checkpoint_id"),
        next=steps_left(snapshot),
    )


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
    return Context.from_record(raw) if isinstance(raw, dict) else None


async def thread_context(
    graph: AgentGraph, settings: Settings, thread_id: str, overrides: dict[str, Any]
) -> Context:
    """Return the options the thread last ran with (the settings' where none were recorded),
    with the non-None `overrides` applied.

    Raises:
        ThreadNotFoundError: no checkpoint exists for the thread.
        ConfigError: an override names no option or has a bad value.
    """
    stored = await stored_context(graph, thread_id)
    given = {k: v for k, v in overrides.items() if v is not None}
    return Context.from_settings(settings, **{**(stored.__dict__ if stored else {}), **given})
