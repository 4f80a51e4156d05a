"""Every run's events, kept compactly for replay (`graphs.replay`).

`graphs.runs.run_events` hands each event of a run (CLI, server, queue worker alike) to a
`RunRecorder` as the run's client gets it: one row of `agentgraph_run_records` per run,
stored after the run's first plan, step result or approval, brought up to date after each
later one (at most every `KEEP_EVERY_S`, by a `RecordKeeper`) and at the run's end. A run
whose process dies (`kill -9`, a segfault) keeps what it did until then, but for what came
within `KEEP_EVERY_S` of the last store.

Token deltas, most of a run's events, are merged per stream (a node and step): the stream's
whole text and, per delta, a `[gap, length]` pair, the gap in ticks of `TICK_MS` since the
stream's previous delta. Every other event is kept as it was, with its tick since the run
started. Ticks grow strictly over the whole run, so the events' order is exact however the
streams interleave.

The records are deleted with their thread, and pruned with its old checkpoints
(`graphs.retention`): a record of a run that started before the cutoff goes, but for the
thread's latest.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Json
from psycopg_pool import AsyncConnectionPool

from app.pg import create_schema, delete_where

RunEvent = dict[str, Any]
Timeline = list[tuple[float, RunEvent]]
"""Events with their offsets from the run's start, in milliseconds, in order."""

logger = logging.getLogger(__name__)

FORMAT = 1
TICK_MS = 0.1
KEEP_EVERY_S = 1.0
"""How often, at most, a running run's record is stored again."""
_DELTA_KEYS = frozenset({"event", "node", "step_id", "text"})
SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS agentgraph_run_records (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        thread_id text NOT NULL,
        run_id text NOT NULL,
        started_at timestamptz NOT NULL,
        duration_ms double precision NOT NULL,
        events integer NOT NULL,
        record json NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS agentgraph_run_records_thread_idx"
    " ON agentgraph_run_records (thread_id, started_at)",
)


@dataclass
class _Stream:
    node: str
    step_id: str | None
    parts: list[str] = field(default_factory=list)
    marks: list[list[int]] = field(default_factory=list)
    last: int = 0


class RunRecorder:
    """Collects one run's events compactly, with their timing (see the module)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.started_at = datetime.now(UTC)
        self.count = 0
        self.seq: int | None = None
        """The record's row, once stored."""
        self._last = -1
        self._events: list[list[Any]] = []
        self._streams: dict[tuple[str, str | None], _Stream] = {}

    def see(self, event: RunEvent) -> None:
        """Record one event, as its client got it now."""
        tick = max(round((self.clock() - self.started) * 1000 / TICK_MS), self._last + 1)
        self._last = tick
        self.count += 1
        if event["event"] == "delta" and event.keys() == _DELTA_KEYS:
            key = (event["node"], event["step_id"])
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = _Stream(event["node"], event["step_id"])
            stream.parts.append(event["text"])
            stream.marks.append([tick - stream.last, len(event["text"])])
            stream.last = tick
            return
        self._events.append([tick, event])

    @property
    def duration_ms(self) -> float:
        """How long the run has taken so far."""
        return (self.clock() - self.started) * 1000

    def record(self) -> dict[str, Any]:
        """Return the compact record of the events seen."""
        return {
            "format": FORMAT,
            "tick_ms": TICK_MS,
            "events": self._events,
            "deltas": [
                {"node": s.node, "step_id": s.step_id, "text": "".join(s.parts), "marks": s.marks}
                for s in self._streams.values()
            ],
        }


def decode(record: dict[str, Any]) -> Timeline:
    """Return the events of a record in their order, with their offsets in milliseconds."""
    tick_ms: float = record["tick_ms"]
    ticked: list[tuple[int, RunEvent]] = [(tick, event) for tick, event in record["events"]]
    for stream in record["deltas"]:
        tick = 0
        at = 0
        text: str = stream["text"]
        for gap, length in stream["marks"]:
            tick += gap
            ticked.append(
                (
                    tick,
                    {
                        "event": "delta",
                        "node": stream["node"],
                        "step_id": stream["step_id"],
                        "text": text[at : at + length],
                    },
                )
            )
            at += length
    ticked.sort(key=lambda pair: pair[0])
    return [(tick * tick_ms, event) for tick, event in ticked]


async def setup_run_records(pool: AsyncConnectionPool[Any]) -> None:
    """Create the records' table if it is missing, one process at a time."""
    await create_schema(pool, *SCHEMA)


async def store_record(
    pool: AsyncConnectionPool[Any], thread_id: str, run_id: str, recorder: RunRecorder
) -> None:
    """Store a run's record (one row), or bring the row it was stored in up to date."""
    values = (recorder.duration_ms, recorder.count, Json(recorder.record(), dumps=_dumps))
    async with pool.connection() as conn:
        if recorder.seq is not None:
            await conn.execute(
                "UPDATE agentgraph_run_records SET duration_ms = %s, events = %s, record = %s"
                " WHERE seq = %s",
                (*values, recorder.seq),
            )
            return
        cursor = await conn.execute(
            "INSERT INTO agentgraph_run_records"
            " (thread_id, run_id, started_at, duration_ms, events, record)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq",
            (thread_id, run_id, recorder.started_at, *values),
        )
        row = await cursor.fetchone()
    assert row is not None
    recorder.seq = row["seq"]


class RecordKeeper:
    """Stores a running run's record after its plans, step results and approvals (`nudge`),
    at most every `KEEP_EVERY_S`, one store at a time; `close` stores it a last time (or
    deletes it, for a run rolled back). A database that fails is logged, not raised
    (`keep_record`)."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], thread_id: str, run_id: str, recorder: RunRecorder
    ) -> None:
        self.pool = pool
        self.thread_id = thread_id
        self.run_id = run_id
        self.recorder = recorder
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._task = asyncio.create_task(self._keep())

    def nudge(self) -> None:
        """Something worth keeping happened: store the record soon."""
        self._wake.set()

    async def close(self, *, keep: bool = True) -> None:
        """Wait for a store under way, then store the record a last time when it holds
        events (with `keep`), or delete the row it was stored in (without)."""
        self._closed.set()
        self._wake.set()
        await self._task
        if keep:
            if self.recorder.count:
                await self._store()
        elif self.recorder.seq is not None:
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(
                        "DELETE FROM agentgraph_run_records WHERE seq = %s", (self.recorder.seq,)
                    )
            except psycopg.Error as exc:
                logger.warning("could not delete the record of run %s: %s", self.run_id, exc)

    async def _keep(self) -> None:
        while True:
            await self._wake.wait()
            if self._closed.is_set():
                return
            self._wake.clear()
            await self._store()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), KEEP_EVERY_S)

    async def _store(self) -> None:
        await keep_record(self.pool, self.thread_id, self.run_id, self.recorder)


async def keep_record(
    pool: AsyncConnectionPool[Any], thread_id: str, run_id: str, recorder: RunRecorder
) -> None:
    """`store_record`, with a database that fails logged, not raised: the run itself is in
    its checkpoints, and only its replay lacks what was not stored."""
    try:
        await store_record(pool, thread_id, run_id, recorder)
    except psycopg.Error as exc:
        logger.warning("could not keep the events of run %s of %s: %s", run_id, thread_id, exc)


@dataclass(frozen=True)
class RecordedRun:
    """One stored run of a thread."""

    run_id: str
    started_at: datetime
    duration_ms: float
    timeline: Timeline


async def read_records(pool: AsyncConnectionPool[Any], thread_id: str) -> list[RecordedRun]:
    """A thread's recorded runs, in the order they started."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT run_id, started_at, duration_ms, record FROM agentgraph_run_records"
            " WHERE thread_id = %s ORDER BY started_at, seq",
            (thread_id,),
        )
        rows = await cursor.fetchall()
    return [
        RecordedRun(r["run_id"], r["started_at"], r["duration_ms"], decode(r["record"]))
        for r in rows
    ]


async def prune_records(
    conn: AsyncConnection[Any], thread_id: str, cutoff: datetime, *, dry_run: bool = False
) -> int:
    """Delete (or, dry, count) a thread's records of runs that started before `cutoff`, but
    for its latest run's; return how many."""
    return await delete_where(
        conn,
        "agentgraph_run_records",
        "thread_id = %s AND started_at < %s AND seq <> ("
        "SELECT max(seq) FROM agentgraph_run_records WHERE thread_id = %s)",
        (thread_id, cutoff, thread_id),
        dry_run=dry_run,
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)
