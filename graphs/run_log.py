"""Background runs as rows, and their events as a log any process can follow.

A run started in the background (`graphs.queue`) is a row of `agentgraph_runs`: what it was
asked (a question, a decision, or to continue), who asked, its status, and the queue job that
executes it. The worker that executes it appends every event the run emits to
`agentgraph_run_events`, numbered from 1, in batches, each batch committed with a `NOTIFY` on
`EVENTS_CHANNEL`. So a client of any server can read a run's events from the start (a late
join), or from the last one it saw, and then wait for the next batch (`RunFeed`, `follow`).
A run retried on another worker after a crash goes on appending to the same log.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from app.pg import create_schema, redact
from graphs.runs import RunEvent

logger = logging.getLogger(__name__)

RunStatus = Literal["queued", "running", "interrupted", "done", "failed", "rejected", "cancelled"]
ENDED: frozenset[str] = frozenset({"interrupted", "done", "failed", "rejected", "cancelled"})
"""Statuses after which a run appends no more events."""
STATUSES: tuple[str, ...] = get_args(RunStatus)
EVENTS_CHANNEL = "agentgraph_run_events"
RECONNECT_S = 1.0
FLUSH_S = 0.05
"""A worker writes a run's events at most once in this span: one commit (and one
notification) carries every token of it."""
POLL_S = 5.0
"""How often a follower reads the log though no notification came (one may be lost while its
listener reconnects)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS agentgraph_runs (
    run_id text PRIMARY KEY,
    thread_id text NOT NULL,
    status text NOT NULL,
    run_order jsonb NOT NULL,
    started_by text NOT NULL,
    tenant text NOT NULL,
    job_id bigint,
    cron_id text,
    attempts integer NOT NULL DEFAULT 0,
    worker text,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    ended_at timestamptz
);
-- The API key a run acts for, if any: checked again when a worker starts the run (revoked,
-- expired, its daily budget spent), and charged what the run spends when it has a budget.
ALTER TABLE agentgraph_runs ADD COLUMN IF NOT EXISTS charge_key text;
CREATE INDEX IF NOT EXISTS agentgraph_runs_thread_idx ON agentgraph_runs (thread_id, created_at);
CREATE INDEX IF NOT EXISTS agentgraph_runs_status_idx ON agentgraph_runs (status, created_at);
CREATE TABLE IF NOT EXISTS agentgraph_run_events (
    run_id text NOT NULL REFERENCES agentgraph_runs ON DELETE CASCADE,
    seq integer NOT NULL,
    event jsonb NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS agentgraph_crons (
    cron_id text PRIMARY KEY,
    schedule text NOT NULL,
    question text NOT NULL,
    thread_id text,
    options jsonb NOT NULL,
    started_by text NOT NULL,
    tenant text NOT NULL,
    keyed boolean NOT NULL,
    next_run_at timestamptz NOT NULL,
    last_run_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The API key that made the cron, if any: its firings are that key's background runs.
ALTER TABLE agentgraph_crons ADD COLUMN IF NOT EXISTS key_id text;
CREATE INDEX IF NOT EXISTS agentgraph_crons_due_idx ON agentgraph_crons (next_run_at);
"""


@dataclass(frozen=True)
class RunRecord:
    """One background run, as its row holds it."""

    run_id: str
    thread_id: str
    status: RunStatus
    run_order: dict[str, Any]
    """What was asked: `request`, `decision` or `proceed`, with `options`, `new_thread` and
    `multitask` (the fields of `graphs.driver.RunOrder`)."""
    started_by: str
    tenant: str
    job_id: int | None
    cron_id: str | None
    attempts: int
    worker: str | None
    """The worker that took the run last (host:pid)."""
    error: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    charge_key: str | None = None
    """The API key (id) the run acts for, if any: checked again when a worker starts the run,
    and charged what it spends when the key has a daily budget (`graphs.budgets`)."""

    @property
    def ended(self) -> bool:
        """Whether the run appends no more events."""
        return self.status in ENDED

    def public(self) -> dict[str, Any]:
        """The run as the API shows it."""
        return {
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "status": self.status,
            "question": self.run_order.get("request"),
            "kind": kind_of(self.run_order),
            "started_by": self.started_by,
            "cron_id": self.cron_id,
            "attempts": self.attempts,
            "worker": self.worker,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
        }


def kind_of(run_order: dict[str, Any]) -> Literal["request", "resume", "continue"]:
    """What a run order asks: a new question, the answer to an approval, or to continue."""
    if run_order.get("request") is not None:
        return "request"
    return "continue" if run_order.get("proceed") else "resume"


async def setup_run_log(pool: AsyncConnectionPool[Any]) -> None:
    """Create the tables of runs, their events and crons (`graphs.crons`), one process
    at a time."""
    await create_schema(pool, SCHEMA)


_COLUMNS = (
    "run_id, thread_id, status, run_order, started_by, tenant, job_id, cron_id, attempts, "
    "worker, error, created_at, started_at, ended_at, charge_key"
)


async def insert_run(
    conn: AsyncConnection[Any],
    *,
    run_id: str,
    thread_id: str,
    run_order: dict[str, Any],
    started_by: str,
    tenant: str,
    cron_id: str | None = None,
    charge_key: str | None = None,
) -> None:
    """Record a queued run (in the caller's transaction, beside its queue job)."""
    await conn.execute(
        "INSERT INTO agentgraph_runs (run_id, thread_id, status, run_order, started_by, tenant,"
        " cron_id, charge_key) VALUES (%s, %s, 'queued', %s, %s, %s, %s, %s)",
        (run_id, thread_id, Jsonb(run_order), started_by, tenant, cron_id, charge_key),
    )


async def set_job(conn: AsyncConnection[Any], run_id: str, job_id: int) -> None:
    """Name the queue job that executes the run."""
    await conn.execute("UPDATE agentgraph_runs SET job_id = %s WHERE run_id = %s", (job_id, run_id))


async def get_run(pool: AsyncConnectionPool[Any], run_id: str) -> RunRecord | None:
    """The run, or None when there is no such run."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT {_COLUMNS} FROM agentgraph_runs WHERE run_id = %s", (run_id,)
        )
        row = await cursor.fetchone()
    return RunRecord(**row) if row else None


async def list_runs(
    pool: AsyncConnectionPool[Any],
    *,
    thread_id: str | None = None,
    cron_id: str | None = None,
    status: str | None = None,
    tenant: str | None = None,
    limit: int = 50,
) -> list[RunRecord]:
    """Background runs, newest first: of a thread, of a cron, in a status, of a tenant (each
    filter when given)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT {_COLUMNS} FROM agentgraph_runs"
            " WHERE (%(thread)s::text IS NULL OR thread_id = %(thread)s)"
            " AND (%(cron)s::text IS NULL OR cron_id = %(cron)s)"
            " AND (%(status)s::text IS NULL OR status = %(status)s)"
            " AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
            " ORDER BY created_at DESC LIMIT %(limit)s",
            {
                "thread": thread_id,
                "cron": cron_id,
                "status": status,
                "tenant": tenant,
                "limit": limit,
            },
        )
        return [RunRecord(**row) for row in await cursor.fetchall()]


async def mark_running(pool: AsyncConnectionPool[Any], run_id: str, *, worker: str) -> None:
    """`worker` took the run (again, after a crash: one attempt more)."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE agentgraph_runs SET status = 'running', attempts = attempts + 1,"
            " worker = %s, started_at = coalesce(started_at, now()) WHERE run_id = %s",
            (worker, run_id),
        )


async def mark_ended(
    pool: AsyncConnectionPool[Any], run_id: str, status: RunStatus, error: str | None = None
) -> bool:
    """Record how the run ended, unless it had ended already; return whether it was recorded."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "UPDATE agentgraph_runs SET status = %s, error = %s, ended_at = now()"
            " WHERE run_id = %s AND status IN ('queued', 'running')",
            (status, error, run_id),
        )
        ended: bool = cursor.rowcount == 1
        if ended:  # a follower waiting for more events learns that none will come
            await conn.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, run_id))
    return ended


async def last_seq(pool: AsyncConnectionPool[Any], run_id: str) -> int:
    """The number of the run's last stored event (0: none)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT coalesce(max(seq), 0) AS seq FROM agentgraph_run_events WHERE run_id = %s",
            (run_id,),
        )
        row = await cursor.fetchone()
    return int(row["seq"]) if row else 0


async def read_events(
    pool: AsyncConnectionPool[Any], run_id: str, *, after: int = 0, limit: int = 1000
) -> list[tuple[int, RunEvent]]:
    """The run's stored events numbered after `after`, in order."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT seq, event FROM agentgraph_run_events WHERE run_id = %s AND seq > %s"
            " ORDER BY seq LIMIT %s",
            (run_id, after, limit),
        )
        return [(row["seq"], row["event"]) for row in await cursor.fetchall()]


class EventWriter:
    """Appends one run's events to its log, at most one batch each `FLUSH_S`, each batch
    committed with a notification. `put` is called in the event loop's thread (a run's sink)."""

    def __init__(self, pool: AsyncConnectionPool[Any], run_id: str, *, after: int) -> None:
        self.pool = pool
        self.run_id = run_id
        self.seq = after
        self.pending: list[tuple[int, RunEvent]] = []
        self.wake = asyncio.Event()
        self.closing = False
        self.task = asyncio.create_task(self._flush_loop(), name=f"events-{run_id}")

    def put(self, event: RunEvent) -> None:
        """Queue an event; it is written within `FLUSH_S`."""
        self.seq += 1
        self.pending.append((self.seq, event))
        self.wake.set()

    async def _flush_loop(self) -> None:
        # The first event after a quiet spell is written at once; what follows it within
        # `FLUSH_S` waits for the next batch.
        while not self.closing:
            await self.wake.wait()
            await self.flush()
            await asyncio.sleep(FLUSH_S)

    async def flush(self) -> None:
        """Write what is queued now."""
        self.wake.clear()
        batch, self.pending = self.pending, []
        if not batch:
            return
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO agentgraph_run_events (run_id, seq, event) VALUES (%s, %s, %s)",
                    [(self.run_id, seq, Jsonb(event, dumps=_dumps)) for seq, event in batch],
                )
            await conn.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, self.run_id))

    async def close(self) -> None:
        """Write every queued event and stop."""
        self.closing = True
        self.wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            self.task.cancel()
            await self.task
        await self.flush()


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


class RunFeed:
    """Wakes followers of a run when its log grows, on whichever process wrote it: one
    `LISTEN` connection per process (`listen`), one `asyncio.Event` per follower."""

    def __init__(self) -> None:
        self.waiters: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def watching(self, run_id: str) -> Any:
        """Within the block, the yielded event is set when the run's log may have grown."""
        event = asyncio.Event()
        self.waiters.setdefault(run_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self.waiters.get(run_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self.waiters[run_id]

    def _wake(self, run_id: str | None) -> None:
        targets = (
            [e for events in self.waiters.values() for e in events]
            if run_id is None
            else self.waiters.get(run_id, ())
        )
        for event in targets:
            event.set()

    async def listen(self, url: str) -> None:
        """Wake followers on every notification, until cancelled; a lost connection is opened
        again (and every follower woken, to read what it may have missed)."""
        while True:
            try:
                async with await AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    self._wake(None)
                    async for notification in conn.notifies():
                        self._wake(notification.payload)
            except psycopg.OperationalError as exc:
                logger.warning(
                    "lost the run events' connection to %s (%s); listening again", redact(url), exc
                )
                await asyncio.sleep(RECONNECT_S)


async def follow(
    pool: AsyncConnectionPool[Any], feed: RunFeed, run_id: str, *, after: int = 0
) -> AsyncIterator[tuple[int, RunEvent] | None]:
    """Yield the run's events numbered after `after`, then each new one as it is written,
    until the run has ended and every event is read. None is yielded after each `POLL_S` of
    silence (a stream's keep-alive)."""
    ending = False
    while True:
        with feed.watching(run_id) as grew:
            events = await read_events(pool, run_id, after=after)
            for seq, event in events:
                yield seq, event
                after = seq
            if events:
                continue
            if ending:
                return
            record = await get_run(pool, run_id)
            if record is None or record.ended:
                # Its status is written after its last event: read once more, then stop.
                ending = True
                continue
            try:
                await asyncio.wait_for(grew.wait(), POLL_S)
            except TimeoutError:
                yield None
