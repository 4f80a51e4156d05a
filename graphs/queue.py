"""Background runs on a Postgres queue (procrastinate): enqueue them, execute them on workers.

A background run is a row of `agentgraph_runs` (`graphs.run_log`) and a procrastinate job that
names it, written in one transaction. Jobs carry the thread id as their procrastinate `lock`,
so one thread's runs execute one after another, in the order they came. A worker (`agentgraph
worker`, or a server with its in-process worker) takes a job, claims the run through the one
run driver (`graphs.driver.claim_run`: the thread's advisory lock and its checks), and appends
its events to the run's log for any server to stream.

A worker that dies (`kill -9`, a lost machine) stops sending its heartbeat; another worker
finds its jobs (`graphs.worker.retry_stalled`) and runs them again. A retried run goes on
from the thread's latest checkpoint when that checkpoint is the run's own (its id is in the
checkpoint's metadata), so no step that finished runs again. A worker that is asked to stop
cuts its runs off after a grace period (`graphs.worker`), and they are retried the same way.
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import procrastinate
import psycopg
from procrastinate import JobContext, RetryStrategy
from procrastinate.exceptions import JobAborted
from procrastinate.job_context import AbortReason
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from app.auth import Keys
from app.errors import AgentGraphError, AuthError, DatabaseError
from app.pg import schema_transaction
from app.settings import Settings
from graphs.budgets import budgeted, charge
from graphs.driver import RunOrder, claim_run
from graphs.locks import PooledLocks
from graphs.multitask import StopMode, StopRequest
from graphs.run_log import (
    EventWriter,
    RunRecord,
    RunStatus,
    get_run,
    insert_run,
    last_seq,
    mark_ended,
    mark_running,
    set_job,
)
from graphs.runs import RUN_ID_KEY, RunEvent
from graphs.service import Agent
from graphs.threads import get_snapshot, steps_left, thread_status

logger = logging.getLogger(__name__)

TASK = "agentgraph.run"
QUEUE = "agentgraph_runs"
LOCK_WAIT_S = 10.0
"""How long a run waits for a lock connection when every one is taken."""
RUN_ATTEMPTS = 5
"""Times a run is started at most: the first, and retries after crashes or lost databases."""
CANCELLED = "cancelled by request; the thread keeps every finished step (continue it to go on)"
WORKER_STOPPING = "the worker stopped; the run goes on from its last checkpoint on another worker"


def order_document(order: RunOrder) -> dict[str, Any]:
    """A run order as its run's row stores it."""
    return {
        "request": order.request,
        "decision": order.decision,
        "proceed": order.proceed,
        "options": dict(order.options),
        "new_thread": order.new_thread,
        "multitask": order.multitask,
    }


def order_of(record: RunRecord) -> RunOrder:
    """The run order a run's row stores."""
    stored = record.run_order
    return RunOrder(
        thread_id=record.thread_id,
        request=stored.get("request"),
        decision=stored.get("decision"),
        proceed=bool(stored.get("proceed")),
        options=stored.get("options") or {},
        new_thread=bool(stored.get("new_thread")),
        multitask=stored.get("multitask") or "reject",
    )


def worker_name() -> str:
    """How a worker names itself (host:pid) in the runs it takes."""
    return f"{socket.gethostname()}:{os.getpid()}"


def new_run_id() -> str:
    """Return a fresh run id."""
    return uuid.uuid4().hex


def queue_app(url: str, *, pool_size: int = 4) -> procrastinate.App:
    """The queue's procrastinate app on the database at `url` (opened by the caller)."""
    connector = procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=pool_size)
    return procrastinate.App(connector=connector)


async def setup_queue(app: procrastinate.App, pool: AsyncConnectionPool[Any]) -> None:
    """Create the queue's tables once, one process at a time."""
    async with schema_transaction(pool) as conn:
        cursor = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS ok")
        row = await cursor.fetchone()
        if not (row and row["ok"]):
            await app.schema_manager.apply_schema_async()


@contextlib.asynccontextmanager
async def open_queue(url: str, pool: AsyncConnectionPool[Any]) -> AsyncIterator[procrastinate.App]:
    """Open the queue on the database at `url`, its tables set up.

    Raises:
        DatabaseError: the database cannot be reached.
    """
    app = queue_app(url)
    try:
        await app.open_async()
    except Exception as exc:
        raise DatabaseError(f"cannot open the run queue: {exc}") from exc
    try:
        await setup_queue(app, pool)
        yield app
    finally:
        await app.close_async()


async def enqueue(
    app: procrastinate.App,
    conn: AsyncConnection[Any],
    order: RunOrder,
    *,
    run_id: str,
    started_by: str,
    tenant: str,
    cron_id: str | None = None,
    charge_key: str | None = None,
) -> None:
    """Record a run and queue its job, in the caller's transaction on `conn`. The run acts
    for the API key `charge_key`, if given: the worker checks the key when it starts the run,
    and charges it what the run spends when it has a daily budget (`graphs.budgets`)."""
    await insert_run(
        conn,
        run_id=run_id,
        thread_id=order.thread_id,
        run_order=order_document(order),
        started_by=started_by,
        tenant=tenant,
        cron_id=cron_id,
        charge_key=charge_key,
    )
    job_id = await app.configure_task(
        TASK, queue=QUEUE, lock=order.thread_id, connection=conn
    ).defer_async(run_id=run_id)
    await set_job(conn, run_id, job_id)


async def cancel(app: procrastinate.App, pool: AsyncConnectionPool[Any], record: RunRecord) -> bool:
    """Cancel a run: a queued one never starts, a running one is cut off where it is (the
    thread keeps every finished step). Return False when the run had ended already."""
    if record.ended:
        return False
    manager = app.job_manager
    if record.job_id is None or await manager.cancel_job_by_id_async(record.job_id):
        await mark_ended(pool, record.run_id, "cancelled", CANCELLED)  # it never started
    else:  # under way: its worker cuts it off and records it cancelled
        await manager.cancel_job_by_id_async(record.job_id, abort=True)
    return True


@dataclass
class _Active:
    """A run a worker executes: its claim, and whether another run asked it to stop."""

    thread_id: str
    claim_id: str
    stop_mode: StopMode | None = None


@dataclass
class _Outcome:
    """How a run ended, from its events."""

    status: RunStatus = "failed"
    error: str | None = "the run ended without an outcome"

    def see(self, event: RunEvent) -> None:
        kind = event["event"]
        if kind == "final":
            self.status, self.error = event["status"], None
        elif kind == "interrupt":
            self.status, self.error = "interrupted", None
        elif kind == "error":
            stopped = event.get("type") == "RunStopped"
            self.status = "cancelled" if stopped else "failed"
            self.error = str(event.get("message"))


class Executor:
    """Executes background runs on a worker: the procrastinate task's body."""

    def __init__(self, agent: Agent, settings: Settings, lock_pool: AsyncConnectionPool[Any]):
        self.agent = agent
        self.settings = settings
        self.locks = PooledLocks(lock_pool, wait_s=LOCK_WAIT_S)
        self.keys = Keys(agent.db.pool)
        self.active: dict[str, _Active] = {}

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        return self.agent.db.pool

    def on_stop(self, request: StopRequest) -> None:
        """Another run asked the run of a thread to stop (`graphs.multitask`)."""
        for active in self.active.values():
            if active.thread_id == request.thread_id and active.claim_id != request.request_id:
                active.stop_mode = request.mode

    async def resumed_order(self, record: RunRecord) -> RunOrder | RunStatus:
        """What a run does now: its order, or, taken again after a crash, continue from its
        own latest checkpoint; or the status it had reached when the crash came."""
        order = order_of(record)
        if record.attempts == 0:
            return order
        try:
            snapshot = await get_snapshot(self.agent.graph, record.thread_id)
        except AgentGraphError:
            return order  # nothing stored: the run never got going
        if (snapshot.metadata or {}).get(RUN_ID_KEY) != record.run_id:
            return order  # the thread's latest checkpoint is an earlier run's
        if snapshot.interrupts:
            return "interrupted"
        if steps_left(snapshot):
            return RunOrder(thread_id=record.thread_id, proceed=True)
        return thread_status(snapshot)

    async def execute(self, context: JobContext, run_id: str) -> None:
        """Run one background run to its end, appending its events to its log."""
        record = await get_run(self.pool, run_id)
        if record is None or record.ended:
            return  # deleted with its thread, or cancelled before it started
        now = await self.resumed_order(record)
        await mark_running(self.pool, run_id, worker=worker_name())
        if isinstance(now, str):  # the crash came after the run's end
            await mark_ended(self.pool, run_id, now)
            return
        writer = EventWriter(self.pool, run_id, after=await last_seq(self.pool, run_id))
        outcome = _Outcome()

        def sink(event: RunEvent) -> None:
            outcome.see(event)
            writer.put(event)

        ended: RunStatus | None = None
        try:
            try:
                await self._run(now, run_id, sink, key_id=record.charge_key)
            except AgentGraphError as exc:
                sink({"event": "error", "type": type(exc).__name__, "message": str(exc)})
            ended = outcome.status
        except asyncio.CancelledError:
            if context.abort_reason() == AbortReason.USER_REQUEST:
                sink({"event": "error", "type": "RunCancelled", "message": CANCELLED})
                outcome.status, outcome.error, ended = "cancelled", CANCELLED, "cancelled"
                raise JobAborted(CANCELLED) from None
            sink({"event": "error", "type": "WorkerStopping", "message": WORKER_STOPPING})
            raise  # retried (`RUN_RETRY`)
        finally:
            await writer.close()
            if ended is not None:
                await mark_ended(self.pool, run_id, ended, outcome.error)

    async def _acting_key(self, order: RunOrder, key_id: str) -> tuple[RunOrder, str | None]:
        """Check the API key a run acts for as it stands now, and cap the run to the key's
        daily budget; return the order and the key to charge the run to (None: no budget).

        Raises:
            AuthError: the key was deleted, revoked or has expired since the run was queued.
            BudgetExceededError: the key spent its daily budget since.
        """
        try:
            who = await self.keys.principal(key_id)
        except AuthError as exc:
            refusal = f"{exc}: the runs it queued and its crons' firings do not start"
            raise AuthError(refusal) from None
        if not who.has_budget:
            return order, None
        return await budgeted(self.keys, self.agent.graph, self.settings, order, who), key_id

    async def _run(self, order: RunOrder, run_id: str, sink: Any, *, key_id: str | None) -> None:
        charged_to = None
        if key_id is not None:
            order, charged_to = await self._acting_key(order, key_id)
        roster = self.agent.toolbox.roster()
        async with claim_run(
            self.agent.graph, self.locks, self.settings, order, roster=roster
        ) as run:
            active = _Active(run.thread_id, run.claim_id)
            self.active[run.claim_id] = active
            since = time.time()
            try:
                await run.run(sink, stop=lambda: active.stop_mode, run_id=run_id)
            finally:
                self.active.pop(run.claim_id, None)
                if charged_to is not None:  # under the lock still: only this run's spending
                    await charge(self.keys, self.agent.graph, run.thread_id, charged_to, since)


RUN_RETRY = RetryStrategy(
    max_attempts=RUN_ATTEMPTS,
    wait=1,
    # procrastinate types these as Exceptions, but matches any exception the task raised,
    # and a worker's stop raises CancelledError in its tasks.
    retry_exceptions={asyncio.CancelledError, psycopg.OperationalError, DatabaseError},  # type: ignore[arg-type]
)
"""A run cut off by its worker's stop, or by a lost database, is taken again."""


def register(app: procrastinate.App, executor: Executor) -> None:
    """Make `app`'s workers execute runs with `executor`."""

    @app.task(name=TASK, queue=QUEUE, pass_context=True, retry=RUN_RETRY)
    async def run(context: JobContext, run_id: str) -> None:
        await executor.execute(context, run_id)
