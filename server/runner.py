"""Runs as background tasks: a run goes on when its client leaves, one run per thread.

Each run holds its thread's Postgres advisory lock (`graphs.locks`) for its whole life, on a
connection of its own, so two replicas on one database, or a replica and the CLI, never run
one thread at once; a second start, resume or continue gets `ThreadBusyError` (409). Events
go into a queue that the streaming response reads; nobody has to read it for the run to finish.
"""

import asyncio
import contextlib
import contextvars
import logging
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app.auth import LOCAL, Keys, Principal
from app.errors import DatabaseError, RateLimitedError, ServerStoppingError
from app.settings import Settings
from app.telemetry.metrics import count_rejection
from graphs.budgets import budgeted, charge
from graphs.driver import ClaimedRun, RunOrder, claim_run
from graphs.locks import PooledLocks, locked_threads, try_key_slot, unlock_threads
from graphs.multitask import StopMode, StopRequest
from graphs.runs import RunEvent
from graphs.service import Agent

logger = logging.getLogger(__name__)

LOCK_WAIT_S = 10.0
"""How long a new run waits for a lock connection when every one is taken."""
KEY_SLOT_RETRY_S = 5.0
"""The Retry-After of a run refused because its key's runs are all in flight: a guess, as
when one ends is not known."""
STOPPING_MESSAGE = (
    "the server is stopping; the thread keeps every finished step: continue it later "
    "(POST /api/v1/threads/{id}/continue on any server)"
)


@dataclass
class RunHandle:
    """One run: its ids, its event queue (None ends it) and how it ended.

    `plan` is the plan of the run's last `plan_update` and `final` its `final` event: with
    them, a run that finished is described without reading its checkpoint back.
    """

    thread_id: str
    run_id: str
    model: str
    """The run's chat model (its option), as the served runnable reports model calls."""
    queue: asyncio.Queue[RunEvent | None] = field(default_factory=asyncio.Queue)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    plan: dict[str, Any] | None = None
    final: RunEvent | None = None
    task: asyncio.Task[None] | None = None
    claim_id: str = ""
    """The claim's name in a stop request it sent (a run never stops for its own)."""
    stop_mode: StopMode | None = None
    """Set when another run asked this one to stop (`graphs.multitask`)."""


@contextmanager
def stopping_runs_on_exit_signals(runs: "RunManager") -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM first stop `runs`, then do what they did
    before (uvicorn's own handler: a graceful shutdown).

    uvicorn waits for open responses before it shuts the app down, and a run's event
    stream stays open until its run ends: stopped at once, every stream ends with its
    `error` event. Only the main thread can handle signals; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(lambda: loop.create_task(runs.stop()))
        before = previous[signal.Signals(sig)]
        if callable(before):
            before(sig, frame)

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


class RunManager:
    """Starts runs under per-thread advisory locks and ends them all when the server stops."""

    def __init__(
        self,
        agent: Agent,
        settings: Settings,
        lock_pool: AsyncConnectionPool[Any],
        keys: Keys | None = None,
    ) -> None:
        self.agent = agent
        self.keys = keys
        """The key store, to hold keys with a daily budget to it (`server.budgets`)."""
        self.settings = settings
        self.locks = PooledLocks(lock_pool, wait_s=LOCK_WAIT_S)
        self.runs: dict[str, RunHandle] = {}
        self.stopping = False
        self.slots = asyncio.Semaphore(settings.max_concurrent_runs)
        """Runs executing at once. More at once only share the process's CPU more thinly (each
        takes longer, and all of them together no fewer); a run waiting for a slot already
        holds its thread, so it answers 409 to a second start as a running one does."""
        self.waiting = 0
        """Runs that hold their thread and wait for a slot."""

    def check_running(self) -> None:
        """Refuse new runs while the server stops.

        Raises:
            ServerStoppingError: it stops.
        """
        if self.stopping:
            raise ServerStoppingError("the server is stopping; retry on another replica")

    async def is_running(self, thread_id: str) -> bool:
        """Whether a run, of any process on this database, holds the thread now."""
        async with self.agent.db.pool.connection() as conn:
            return thread_id in await locked_threads(conn, [thread_id])

    @asynccontextmanager
    async def key_slot(self, who: Principal) -> AsyncIterator[None]:
        """Hold one of the key's run slots for the run, when the key has a limit.

        Raises:
            RateLimitedError: every slot of the key is taken, on this server or another.
        """
        if who.key_id is None or not who.limits.concurrent_runs:
            yield
            return
        pool = self.locks.pool
        try:
            conn = await pool.getconn(timeout=LOCK_WAIT_S)
        except PoolTimeout:
            raise DatabaseError(
                f"{pool.max_size} runs are in flight, the most this process takes: retry later"
            ) from None
        try:
            if not await try_key_slot(conn, who.key_id, who.limits.concurrent_runs):
                count_rejection("concurrency")
                raise RateLimitedError(
                    f"this API key may have {who.limits.concurrent_runs} runs in flight at once: "
                    "retry when one ends",
                    retry_after_s=KEY_SLOT_RETRY_S,
                )
            try:
                yield
            finally:
                await unlock_threads(conn)
        finally:
            await pool.putconn(conn)

    async def start(self, order: RunOrder, who: Principal = LOCAL) -> RunHandle:
        """Claim the run `order` asks for (`graphs.driver.claim_run`: lock, checks) and start
        it in the background; the lock is held until the run ends.

        Raises:
            ServerStoppingError: the server is shutting down.
            AgentGraphError: the thread cannot take the run (see `claim_run`).
        """
        self.check_running()
        budget_from: float | None = None
        if self.keys is not None and who.has_budget:
            budget_from = time.time()
            order = await budgeted(self.keys, self.agent.graph, self.settings, order, who)
        claim = contextlib.AsyncExitStack()
        try:
            await claim.enter_async_context(self.key_slot(who))
            run = await claim.enter_async_context(
                claim_run(
                    self.agent.graph,
                    self.locks,
                    self.settings,
                    order,
                    roster=self.agent.toolbox.roster(),
                )
            )
        except BaseException:
            await claim.aclose()
            raise
        handle = RunHandle(
            thread_id=order.thread_id,
            run_id=uuid.uuid4().hex,
            model=run.context.model,
            claim_id=run.claim_id,
        )
        self.runs[handle.run_id] = handle
        # A fresh context: the run outlives the request that started it, and must not report
        # to the request's callbacks (LangServe's stream_events would try to serialise them).
        if budget_from is not None:
            claim.push_async_callback(self._charge, handle, who, budget_from)
        handle.task = asyncio.create_task(
            self._run(handle, claim, run),
            name=f"run-{handle.run_id}",
            context=contextvars.Context(),
        )
        return handle

    async def _run(
        self, handle: RunHandle, claim: contextlib.AsyncExitStack, run: ClaimedRun
    ) -> None:
        try:
            # Leaving the claim unlocks the thread before anyone is told the run ended: a
            # client that resumes as soon as it sees the interrupt must find the thread free.
            async with claim:
                try:
                    self.waiting += 1
                    try:
                        await self.slots.acquire()
                    finally:
                        self.waiting -= 1
                    try:
                        await run.run(
                            lambda event: self._record(handle, event),
                            stop=lambda: handle.stop_mode,
                            run_id=handle.run_id,
                        )
                    finally:
                        self.slots.release()
                except asyncio.CancelledError:
                    handle.error = STOPPING_MESSAGE
                    raise
                except Exception as exc:
                    # run_events reports failures of the graph as events; this is the
                    # bookkeeping.
                    logger.exception("run %s of thread %s failed", handle.run_id, run.thread_id)
                    handle.error = str(exc)
                    handle.queue.put_nowait(
                        {"event": "error", "type": type(exc).__name__, "message": str(exc)}
                    )
        finally:
            handle.queue.put_nowait(None)
            handle.done.set()
            self.runs.pop(handle.run_id, None)

    async def _charge(self, handle: RunHandle, who: Principal, since: float) -> None:
        """Charge the run's key what the run spent (under the thread's lock still, so that
        nothing else moved the thread meanwhile)."""
        assert self.keys is not None
        assert who.key_id is not None
        await charge(self.keys, self.agent.graph, handle.thread_id, who.key_id, since)

    def on_stop(self, request: StopRequest) -> None:
        """Another run asked the run of a thread to stop: if this process runs it, it stops
        before its next super-step (`graphs.multitask.listen_for_stops` calls this)."""
        for handle in self.runs.values():
            if handle.thread_id == request.thread_id and handle.claim_id != request.request_id:
                handle.stop_mode = request.mode

    @staticmethod
    def _record(handle: RunHandle, event: RunEvent) -> None:
        kind = event["event"]
        if kind == "interrupt":
            event = {**event, "resume_url": f"/api/v1/threads/{handle.thread_id}/resume"}
        elif kind == "error":
            handle.error = str(event.get("message"))
        elif kind == "plan_update":
            handle.plan = event.get("plan")
        elif kind == "final":
            handle.final = event
        handle.queue.put_nowait(event)

    async def stop(self) -> None:
        """Take no new runs; end every stream with an error event and cancel the runs.

        The checkpoints keep every finished step, so each thread can be resumed later. A
        second call waits for the same runs to end.
        """
        if not self.stopping:
            self.stopping = True
            for handle in self.runs.values():
                handle.queue.put_nowait(
                    {"event": "error", "type": "ServerStopping", "message": STOPPING_MESSAGE}
                )
                handle.queue.put_nowait(None)
                if handle.task is not None:
                    handle.task.cancel()
        tasks = [h.task for h in self.runs.values() if h.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @asynccontextmanager
    async def locked(self, thread_id: str) -> AsyncIterator[None]:
        """Hold the thread's lock for a short change (a fork).

        Raises:
            ThreadBusyError: a run holds the thread.
            ServerStoppingError: the server is shutting down.
        """
        self.check_running()
        async with self.locks.holding(thread_id):
            yield
