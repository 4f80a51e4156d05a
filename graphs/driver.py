"""The one way a thread is run: lock it, check that it can take the run, run it.

The CLI, the server (and any other process that runs threads) claim a run with `claim_run`:
it takes the thread's lock (`graphs.locks`), refuses what the thread cannot take now (a new
question while it waits for a person, a decision when it waits for none, a continue with
nothing left), and yields the checked run, which holds the lock until the block ends. So
every surface refuses the same things with the same errors.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from app.errors import (
    ConfigError,
    ModelError,
    NothingToContinueError,
    NothingToResumeError,
    ThreadBusyError,
    ThreadNotFoundError,
)
from app.models import get_chat_model, is_loaded
from app.settings import Settings
from graphs.agent import AgentGraph
from graphs.locks import BUSY, ThreadLocks
from graphs.modes import StreamPart, stream_modes
from graphs.multitask import WAIT_S, StopRequest, Strategy
from graphs.runs import RunEvent, StopCheck, run_events, stream_events
from graphs.threads import get_snapshot, steps_left, thread_context, thread_status
from nodes.approval import parse_decision
from nodes.context import Context
from nodes.events import EventSink
from nodes.plans import Roster
from nodes.schemas import ApprovalDecision

WAITS_FOR_APPROVAL = "waits for approval: resume it instead of starting a run"


@dataclass(frozen=True, kw_only=True)
class RunOrder:
    """What a caller asks of a thread: exactly one of a new `request`, the `decision` that
    answers its pending approval (the resume value), or `proceed` (run what a stop or a crash
    left). `options` are run options laid over the process defaults (a new run) or over the
    options the thread last ran with. `new_thread` says the caller just made the id up."""

    thread_id: str
    request: str | None = None
    decision: object = None
    proceed: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    new_thread: bool = False
    multitask: Strategy = "reject"
    """What a new `request` does when a run holds the thread (`graphs.multitask`)."""

    def __post_init__(self) -> None:
        if sum((self.request is not None, self.decision is not None, self.proceed)) != 1:
            raise ValueError("give exactly one of a request, a decision and proceed=True")
        if self.multitask != "reject" and self.request is None:
            raise ValueError("only a new request takes a multitask strategy")


@dataclass(frozen=True)
class ClaimedRun:
    """A checked run of a thread whose lock its claim holds."""

    graph: AgentGraph
    order: RunOrder
    context: Context
    resume: ApprovalDecision | None
    claim_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Names the claim in the stop request it sent, if any (`graphs.multitask`)."""

    @property
    def thread_id(self) -> str:
        """The thread the run is of."""
        return self.order.thread_id

    async def run(
        self, sink: EventSink, *, stop: StopCheck | None = None, run_id: str | None = None
    ) -> None:
        """Run to the end or the next interrupt, handing each event to `sink`; `stop` says,
        between super-steps, whether another run asked this one to stop, and `run_id` names
        the run in its checkpoints (`run_events`)."""
        await run_events(self.graph, sink=sink, stop=stop, run_id=run_id, **self._arguments())

    def stream(self) -> AsyncIterator[RunEvent]:
        """Run to the end or the next interrupt, yielding its events (`stream_events`)."""
        return stream_events(self.graph, **self._arguments())

    def stream_modes(
        self, modes: Sequence[str], *, subgraphs: bool = False, run_id: str | None = None
    ) -> AsyncIterator[StreamPart]:
        """Run to the end or the next interrupt, yielding what LangGraph's stream `modes`
        carry, as its server names them (`graphs.modes.stream_modes`)."""
        return stream_modes(
            self.graph, modes=modes, subgraphs=subgraphs, run_id=run_id, **self._arguments()
        )

    def _arguments(self) -> dict[str, Any]:
        return {
            "thread_id": self.order.thread_id,
            "context": self.context,
            "request": self.order.request,
            "resume": self.resume,
            "proceed": self.order.proceed,
            "new_thread": self.order.new_thread,
        }


@asynccontextmanager
async def claim_run(
    graph: AgentGraph,
    locks: ThreadLocks,
    settings: Settings,
    order: RunOrder,
    *,
    roster: Roster | None = None,
) -> AsyncIterator[ClaimedRun]:
    """Lock the thread, check that it can take `order`, and yield the run, under the lock
    until the block ends. A new request whose `multitask` strategy is not `reject` waits up
    to `graphs.multitask.WAIT_S` for a run that holds the thread, having asked it to stop
    first (`interrupt`, `rollback`). An edited plan is checked against `roster`'s agents
    and tools.

    Raises:
        ConfigError: a bad run option, or a new run's model cannot be loaded.
        ThreadBusyError: another run holds the thread, or it waits for a decision.
        ThreadNotFoundError: a resume or continue of an unknown thread.
        NothingToResumeError: a decision for a thread that waits for none.
        NothingToContinueError: a continue of a thread with nothing left to run.
        InvalidDecisionError: a bad decision.
        DatabaseError: no connection to hold the lock on.
    """
    options = dict(order.options)
    if order.request is not None:
        await check_model(Context.from_settings(settings, **options).model)
    claim_id = uuid.uuid4().hex
    wait_s: float | None = None
    try:
        # First without the lock: a request that cannot run (a continue of a thread that
        # waits for approval, a second resume after the first one's run) must never hold the
        # lock, even for a moment, or a request that can run would meet it and be refused.
        await _run_checks(graph, settings, order, options, roster)
    except (ThreadBusyError, NothingToResumeError, NothingToContinueError):
        if not await locks.held(order.thread_id):
            raise
        if order.multitask == "reject":
            raise ThreadBusyError(order.thread_id, BUSY) from None  # the truer reason
        # Another strategy waits for the run: the checks below decide afterwards.
    if order.multitask != "reject":
        wait_s = WAIT_S
        if order.multitask in ("interrupt", "rollback") and await locks.held(order.thread_id):
            await locks.send_stop(StopRequest(order.thread_id, order.multitask, claim_id))
    async with locks.holding(order.thread_id, wait_s=wait_s):
        # Again under the lock: another run may have moved the thread meanwhile.
        context, resume = await _run_checks(graph, settings, order, options, roster)
        yield ClaimedRun(graph, order, context, resume, claim_id)


async def _run_checks(
    graph: AgentGraph,
    settings: Settings,
    order: RunOrder,
    options: dict[str, Any],
    roster: Roster | None,
) -> tuple[Context, ApprovalDecision | None]:
    """Check that the thread can take `order`; return the run's context and, for a resume,
    the decision (see `claim_run` for what is raised)."""
    if order.request is not None:
        if not order.new_thread:
            await refuse_waiting(graph, order.thread_id)
        return Context.from_settings(settings, **options), None
    context = await thread_context(graph, settings, order.thread_id, options)
    if order.proceed:
        await continue_check(graph, order.thread_id)
        return context, None
    decision = await pending_decision_check(
        graph, order.thread_id, order.decision, context=context, roster=roster
    )
    return context, decision


async def refuse_waiting(graph: AgentGraph, thread_id: str) -> None:
    """Refuse a new question on a thread that waits for a person's decision.

    Raises:
        ThreadBusyError: the thread waits for a decision: resume it instead.
    """
    try:
        snapshot = await get_snapshot(graph, thread_id)
    except ThreadNotFoundError:
        return
    if snapshot.interrupts:
        raise ThreadBusyError(thread_id, WAITS_FOR_APPROVAL)


async def pending_decision_check(
    graph: AgentGraph,
    thread_id: str,
    raw: object,
    *,
    context: Context,
    roster: Roster | None = None,
) -> ApprovalDecision:
    """Validate a resume value against a thread that must be waiting for one.

    Raises:
        ThreadNotFoundError: unknown thread.
        NothingToResumeError: the thread is not waiting for a decision.
        InvalidDecisionError: the decision or its edited plan is invalid.
    """
    snapshot = await get_snapshot(graph, thread_id)
    if not snapshot.interrupts:
        raise NothingToResumeError(thread_id, thread_status(snapshot))
    return parse_decision(raw, max_steps=context.max_steps, roster=roster)


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
    if not steps_left(snapshot):
        raise NothingToContinueError(thread_id, thread_status(snapshot))
