"""Run a thread: its events as they happen, to the run's end or its next interrupt.

What may run, and under which lock, is `graphs.driver`'s; what a thread holds afterwards is
`graphs.threads`'.
"""

import asyncio
import contextlib
import logging
import threading
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, StateSnapshot

from app.checkpoint.saver import NEW_THREAD, ON_WRITES_COMMITTED, UNFLUSHED_WRITES, Saver
from app.errors import AgentGraphError
from graphs.agent import AgentGraph
from graphs.multitask import StopMode
from graphs.observe import RunObservation, run_kind
from graphs.retention import discard_since
from graphs.run_records import RecordKeeper, RunRecorder
from nodes.context import Context
from nodes.events import EventSink, event_sink
from nodes.schemas import ApprovalDecision
from nodes.state import InputState

logger = logging.getLogger(__name__)

RunEvent = dict[str, Any]
KEPT_AT = frozenset({"plan_update", "handoff", "step_result", "interrupt", "fallback"})
"""The events after which a running run's record is stored again (`graphs.run_records`)."""
RUN_ID_KEY = "agentgraph_run_id"
"""The checkpoint metadata that names the background run that wrote the checkpoint."""
StopCheck = Callable[[], StopMode | None]
"""Asked between super-steps: whether another run asked this one to stop, and how."""
STOPPED = {
    "interrupt": "another run took this thread (multitask_strategy=interrupt): this one "
    "stopped after its last finished super-step, which the thread keeps",
    "rollback": "another run took this thread (multitask_strategy=rollback): this one "
    "stopped and every checkpoint it wrote was discarded",
}


def new_thread_id() -> str:
    """Return a fresh thread id."""
    return uuid.uuid4().hex


def thread_config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    """Return the config that addresses a thread (and optionally one of its checkpoints)."""
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def graph_input(
    request: str | None, resume: ApprovalDecision | None
) -> InputState | Command[Any] | None:
    """What the graph is run with: a new request, the resume value of its interrupt, or
    nothing (it goes on from its latest checkpoint)."""
    if resume is not None:
        return Command(resume=dict(resume))
    if request is not None:
        return InputState(request=request)
    return None


def interrupt_event(snapshot: StateSnapshot, thread_id: str) -> RunEvent | None:
    """The `interrupt` event of a thread that waits for a person, else None."""
    if not snapshot.interrupts:
        return None
    first = snapshot.interrupts[0]
    return {
        "event": "interrupt",
        "thread_id": thread_id,
        "interrupt_id": first.id,
        "payload": first.value,
    }


class _AfterCommit:
    """Hands a run's events to its sink in order, holding each step result, and what comes
    after it, until the saver has committed that step's writes: a client that saw a step
    finish never sees it run again because a crash took its result. The wait is one commit.

    Without the Postgres saver (an in-memory one) nothing is held.
    """

    def __init__(self, sink: Callable[[RunEvent], None], *, holding: bool) -> None:
        self.sink = sink
        self.holding = holding
        self.queue: deque[RunEvent] = deque()
        self.stored: set[str] = set()
        """Steps whose result is committed and not yet announced."""

    def put(self, event: RunEvent) -> None:
        """Queue an event (in the event loop's thread)."""
        self.queue.append(event)
        self._drain()

    def committed(self, writes: Sequence[tuple[str, Any]]) -> None:
        """A task's writes are committed (`ON_WRITES_COMMITTED`)."""
        for channel, value in writes:
            if channel == "results" and isinstance(value, dict):
                self.stored.update(str(step_id) for step_id in value)
        self._drain()

    def release(self) -> None:
        """The run ended: its writes are committed (or never will be); hand on the rest."""
        self.holding = False
        self._drain()

    def _drain(self) -> None:
        while self.queue:
            head = self.queue[0]
            if self.holding and head["event"] == "step_result":
                step_id = str(head["result"]["step_id"])
                if step_id not in self.stored:
                    return
                self.stored.discard(step_id)
            self.sink(self.queue.popleft())


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
    stop: StopCheck | None = None,
    run_id: str | None = None,
) -> None:
    """Run (or resume, or continue) a thread to its end or its next interrupt, handing each
    event to `sink` as it happens: plan_update, handoff, delta, step_result, interrupt,
    final, and error when the run fails.

    `stop` is asked before each super-step: when it says `interrupt`, the run ends there
    (the thread keeps what it finished and reads as cut off); `rollback` also discards every
    checkpoint the run wrote. Either ends with an `error` event of type `RunStopped`.

    Exactly one of `request`, `resume` and `proceed` is given. `proceed` runs on from the
    thread's latest checkpoint with no new input: what a run cut off by a stop or a crash
    left to do. Tasks that finished before the stop are not run again. `new_thread` says
    the caller just made the thread id up, so the run does not look for its checkpoint.
    `run_id` names the run in the metadata of every checkpoint it writes (`RUN_ID_KEY`).
    `sink` is called in the event loop's thread, also for events of code that runs in a
    worker thread. The run is observed (`graphs.observe`): its span is the root of its
    trace, named by `run_id` (a fresh id without one), and its end is counted. With the
    Postgres saver, the events `sink` got are stored for replay (`graphs.run_records`) as the
    run goes and at its end, unless the run was rolled back.
    """
    if sum((request is not None, resume is not None, proceed)) != 1:
        raise ValueError("give exactly one of a request, a resume value and proceed=True")
    payload = graph_input(request, resume)
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    finished = False
    saver = graph.checkpointer if isinstance(graph.checkpointer, Saver) else None
    recorder = RunRecorder()
    rolled_back = False
    observation = RunObservation(thread_id=thread_id, run_id=run_id, kind=run_kind(request, resume))
    keeper: RecordKeeper | None = None  # started with the run, closed at its end

    def deliver(event: RunEvent) -> None:
        recorder.see(event)
        if keeper is not None and event["event"] in KEPT_AT:
            keeper.nudge()
        sink(event)

    announcer = _AfterCommit(deliver, holding=saver is not None)

    def put(event: RunEvent) -> None:
        nonlocal finished
        finished = finished or event["event"] == "final"
        observation.see(event)
        if threading.get_ident() == loop_thread:
            announcer.put(event)
        else:
            loop.call_soon_threadsafe(announcer.put, event)

    with observation.running():
        token = event_sink.set(put)
        try:
            if saver is not None:
                keeper = RecordKeeper(saver.conn, thread_id, observation.run_id, recorder)
            # The nodes' events reach `put` directly (`nodes.events`), and LangGraph streams only
            # the state's values, its cheapest mode. Streaming `custom` made a server run take
            # about a fifth more CPU, `updates` more still. A run that stopped without its final
            # event is asked for its interrupt.
            config = thread_config(thread_id)
            if new_thread:
                config["configurable"][NEW_THREAD] = True
            if run_id is not None:
                config["metadata"] = {RUN_ID_KEY: run_id}
            # The Postgres saver need not hold a super-step up until its checkpoint is committed
            # (LangGraph waits for each checkpoint before it sends the next): the checkpoints
            # queue, in order, and the run waits for all of them at its end.
            if saver is not None:
                config["configurable"][UNFLUSHED_WRITES] = True
                config["configurable"][ON_WRITES_COMMITTED] = announcer.committed
            started_at = datetime.now(UTC)
            stopped: StopMode | None = stop() if stop is not None else None
            try:
                if stopped is None:
                    steps = cast(
                        AsyncGenerator[Any, None],
                        graph.astream(payload, config, context=context, stream_mode="values"),
                    )
                    async with contextlib.aclosing(steps):
                        async for _ in steps:
                            if stop is not None and (stopped := stop()) is not None:
                                break
            finally:
                try:
                    if saver is not None:
                        await saver.flush(thread_id)
                finally:
                    announcer.release()
            if stopped is not None:
                if stopped == "rollback" and saver is not None:
                    rolled_back = True
                    await discard_since(saver.conn, thread_id, started_at)
                put({"event": "error", "type": "RunStopped", "message": STOPPED[stopped]})
                return
            if not finished:
                event = interrupt_event(await graph.aget_state(thread_config(thread_id)), thread_id)
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
            if keeper is not None:
                await keeper.close(keep=not rolled_back)


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
