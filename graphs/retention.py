"""Storage that stays bounded: prune old checkpoints, delete whole threads.

A thread's checkpoints form a tree (a fork branches it). Pruning removes the checkpoints
older than a cutoff that nothing needs, and keeps:

- the latest checkpoint of every thread, from which its next run starts;
- the head of every branch (a checkpoint with no child): the latest of a fork, or the one a
  pending approval waits at;
- every fork point (a checkpoint with more than one child), so that the branches still hang
  from it.

A kept checkpoint whose parent is pruned is re-parented to its nearest kept ancestor, so the
history stays a tree. The channel values (`checkpoint_blobs`) that no kept checkpoint refers
to, and the pending writes of pruned checkpoints, go with them, as do the replay records of
the thread's runs that started before the cutoff, but for its latest run's
(`graphs.run_records`), and the event logs of its background runs that ended before the
cutoff, but for its latest background run's (`graphs.run_log`; the runs' rows stay). A thread
that a run holds is skipped (its lock is tried, never waited for); only the root namespace is
pruned.
"""

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from app.pg import delete_where
from graphs.locks import locked_on, try_lock_thread, unlock_threads
from graphs.run_records import prune_records

logger = logging.getLogger(__name__)

PRUNER_LOCK_KEY = 7_310_586_331_045_411_902
"""The advisory lock of the process pruning now: one pruner at a time per database."""


@dataclass(frozen=True)
class CheckpointRow:
    """What pruning needs to know of a checkpoint."""

    checkpoint_id: str
    parent_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class PrunePlan:
    """What pruning one thread removes and re-parents."""

    delete: list[str]
    reparent: dict[str, str | None]
    """Kept checkpoint id → its new parent (None: it has no kept ancestor)."""


@dataclass
class PruneReport:
    """What a prune did (or, dry, would do)."""

    dry_run: bool
    threads_seen: int = 0
    threads_pruned: int = 0
    threads_busy: list[str] = field(default_factory=list)
    checkpoints_deleted: int = 0
    checkpoints_kept: int = 0
    writes_deleted: int = 0
    blobs_deleted: int = 0
    records_deleted: int = 0
    """Replay records of old runs (`graphs.run_records`)."""
    run_events_deleted: int = 0
    """Events of old background runs (`graphs.run_log`)."""


def plan_prune(rows: Sequence[CheckpointRow], cutoff: datetime) -> PrunePlan:
    """Choose which of one thread's checkpoints (root namespace) pruning removes.

    Checkpoint ids grow with time (uuid6), so the greatest is the latest.
    """
    if not rows:
        return PrunePlan(delete=[], reparent={})
    children: dict[str, int] = {}
    for r in rows:
        if r.parent_id is not None:
            children[r.parent_id] = children.get(r.parent_id, 0) + 1
    latest = max(r.checkpoint_id for r in rows)
    delete = {
        r.checkpoint_id
        for r in rows
        if r.created_at < cutoff
        and r.checkpoint_id != latest
        and children.get(r.checkpoint_id, 0) == 1
    }
    parent_of = {r.checkpoint_id: r.parent_id for r in rows}
    reparent: dict[str, str | None] = {}
    for r in rows:
        if r.checkpoint_id in delete or r.parent_id not in delete:
            continue
        ancestor: str | None = r.parent_id
        while ancestor is not None and ancestor in delete:
            ancestor = parent_of.get(ancestor)
        reparent[r.checkpoint_id] = ancestor
    return PrunePlan(delete=sorted(delete), reparent=reparent)


async def _rows(conn: AsyncConnection[Any], thread_id: str) -> list[CheckpointRow]:
    cursor = await conn.execute(
        "SELECT checkpoint_id, parent_checkpoint_id, (checkpoint->>'ts')::timestamptz AS ts"
        " FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = ''",
        (thread_id,),
    )
    return [
        CheckpointRow(r["checkpoint_id"], r["parent_checkpoint_id"], r["ts"])
        for r in await cursor.fetchall()
    ]


async def _apply(conn: AsyncConnection[Any], thread_id: str, plan: PrunePlan) -> tuple[int, int]:
    """Carry out a plan on one thread; return the writes and blobs deleted."""
    for child, parent in plan.reparent.items():
        await conn.execute(
            "UPDATE checkpoints SET parent_checkpoint_id = %s"
            " WHERE thread_id = %s AND checkpoint_ns = '' AND checkpoint_id = %s",
            (parent, thread_id, child),
        )
    await conn.execute(
        "DELETE FROM checkpoints"
        " WHERE thread_id = %s AND checkpoint_ns = '' AND checkpoint_id = ANY(%s)",
        (thread_id, plan.delete),
    )
    writes = await conn.execute(
        "DELETE FROM checkpoint_writes"
        " WHERE thread_id = %s AND checkpoint_ns = '' AND checkpoint_id = ANY(%s)",
        (thread_id, plan.delete),
    )
    # A channel value is stored once per version and shared by every checkpoint that saw
    # that version: it goes when no kept checkpoint names it.
    blobs = await conn.execute(
        """
        DELETE FROM checkpoint_blobs b
        WHERE b.thread_id = %s AND b.checkpoint_ns = ''
          AND NOT EXISTS (
            SELECT 1 FROM checkpoints c
            WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns
              AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version
          )
        """,
        (thread_id,),
    )
    return writes.rowcount, blobs.rowcount


async def _candidates(conn: AsyncConnection[Any], cutoff: datetime) -> list[str]:
    """Threads with more than one checkpoint and at least one older than the cutoff."""
    cursor = await conn.execute(
        "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = ''"
        " GROUP BY thread_id"
        " HAVING count(*) > 1 AND min((checkpoint->>'ts')::timestamptz) < %s"
        " ORDER BY thread_id",
        (cutoff,),
    )
    return [r["thread_id"] for r in await cursor.fetchall()]


async def _prune_run_events(
    conn: AsyncConnection[Any], thread_id: str, cutoff: datetime, *, dry_run: bool
) -> int:
    """Delete (or, dry, count) the events of a thread's background runs that ended before
    `cutoff`, but for its latest background run's; return how many."""
    return await delete_where(
        conn,
        "agentgraph_run_events",
        "run_id IN (SELECT run_id FROM agentgraph_runs"
        " WHERE thread_id = %s AND ended_at < %s AND run_id <> ("
        "SELECT run_id FROM agentgraph_runs WHERE thread_id = %s"
        " ORDER BY created_at DESC LIMIT 1))",
        (thread_id, cutoff, thread_id),
        dry_run=dry_run,
    )


async def prune(
    pool: AsyncConnectionPool[Any],
    *,
    cutoff: datetime,
    dry_run: bool = False,
    thread_ids: Iterable[str] | None = None,
) -> PruneReport:
    """Prune the checkpoints older than `cutoff` that nothing needs (see the module).

    Each thread is pruned in a transaction of its own, under its lock; a thread being run is
    skipped and named in the report. With `dry_run`, nothing is changed and the report says
    what would go (its blob count is not known without deleting, and stays 0).
    """
    report = PruneReport(dry_run=dry_run)
    async with pool.connection() as conn:
        ids = list(thread_ids) if thread_ids is not None else await _candidates(conn, cutoff)
        for thread_id in ids:
            report.threads_seen += 1
            if not await try_lock_thread(conn, thread_id):
                report.threads_busy.append(thread_id)
                continue
            try:
                async with conn.transaction():
                    rows = await _rows(conn, thread_id)
                    plan = plan_prune(rows, cutoff)
                    report.checkpoints_kept += len(rows) - len(plan.delete)
                    report.records_deleted += await prune_records(
                        conn, thread_id, cutoff, dry_run=dry_run
                    )
                    report.run_events_deleted += await _prune_run_events(
                        conn, thread_id, cutoff, dry_run=dry_run
                    )
                    if not plan.delete:
                        continue
                    report.threads_pruned += 1
                    report.checkpoints_deleted += len(plan.delete)
                    if dry_run:
                        continue
                    writes, blobs = await _apply(conn, thread_id, plan)
                    report.writes_deleted += writes
                    report.blobs_deleted += blobs
            finally:
                await unlock_threads(conn)
    return report


async def prune_once(pool: AsyncConnectionPool[Any], *, cutoff: datetime) -> PruneReport | None:
    """Prune unless another process is pruning this database now (then None)."""
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (PRUNER_LOCK_KEY,))
        row = await cursor.fetchone()
        if not (row and row["got"]):
            return None
        try:
            return await prune(pool, cutoff=cutoff)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (PRUNER_LOCK_KEY,))


async def prune_periodically(
    pool: AsyncConnectionPool[Any], ttl: timedelta, *, every_s: float = 3600
) -> None:
    """Prune the checkpoints older than `ttl` now and every `every_s` seconds, forever (a
    task the server cancels when it stops). A failed round is logged and tried again."""
    while True:
        try:
            report = await prune_once(pool, cutoff=datetime.now(UTC) - ttl)
        except Exception:
            logger.exception("pruning checkpoints failed; trying again in %.0f s", every_s)
        else:
            if report is not None and report.checkpoints_deleted:
                logger.info(
                    "pruned %d checkpoints of %d threads older than %s (%d threads busy)",
                    report.checkpoints_deleted,
                    report.threads_pruned,
                    ttl,
                    len(report.threads_busy),
                )
        await asyncio.sleep(every_s)


async def delete_thread(pool: AsyncConnectionPool[Any], thread_id: str) -> int:
    """Delete a thread wholly: every checkpoint, channel value and pending write, its
    background runs with their events, its runs' replay records (`graphs.run_records`), its
    artefacts (`app.artifacts`), its escalated approvals (`graphs.escalations`), and its
    record (`graphs.thread_records`).

    Returns:
        How many checkpoints it had (0: no such thread, nothing deleted).

    Raises:
        ThreadBusyError: a run holds the thread.
    """
    async with pool.connection() as conn, locked_on(conn, thread_id), conn.transaction():
        deleted = await conn.execute("DELETE FROM checkpoints WHERE thread_id = %s", (thread_id,))
        await conn.execute("DELETE FROM checkpoint_writes WHERE thread_id = %s", (thread_id,))
        await conn.execute("DELETE FROM checkpoint_blobs WHERE thread_id = %s", (thread_id,))
        # Its background runs and their events (`graphs.run_log`).
        await conn.execute("DELETE FROM agentgraph_runs WHERE thread_id = %s", (thread_id,))
        await conn.execute("DELETE FROM agentgraph_run_records WHERE thread_id = %s", (thread_id,))
        await conn.execute("DELETE FROM agentgraph_artifacts WHERE thread_id = %s", (thread_id,))
        await conn.execute("DELETE FROM agentgraph_escalations WHERE thread_id = %s", (thread_id,))
        await conn.execute("DELETE FROM agentgraph_threads WHERE thread_id = %s", (thread_id,))
    count: int = deleted.rowcount
    return count


async def discard_since(pool: AsyncConnectionPool[Any], thread_id: str, since: datetime) -> int:
    """Discard the checkpoints a run wrote from `since` on, with their pending writes and
    the channel values only they named: the thread is as it was before that run. The
    caller holds the thread's lock (the run that is rolled back does this itself).

    Returns:
        How many checkpoints were discarded.
    """
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = ''"
            " AND (checkpoint->>'ts')::timestamptz >= %s",
            (thread_id, since),
        )
        ids = [r["checkpoint_id"] for r in await cursor.fetchall()]
        if ids:
            async with conn.transaction():
                await _apply(conn, thread_id, PrunePlan(delete=ids, reparent={}))
    return len(ids)


CHECKPOINT_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


async def copy_thread(pool: AsyncConnectionPool[Any], thread_id: str, new_id: str) -> int:
    """Copy a thread wholly (every checkpoint, channel value and pending write) to `new_id`,
    which must have none yet, under the source thread's lock.

    Returns:
        How many checkpoints were copied.

    Raises:
        ThreadBusyError: a run holds the thread.
    """
    async with pool.connection() as conn, locked_on(conn, thread_id), conn.transaction():
        copied = 0
        for table in CHECKPOINT_TABLES:
            cursor = await conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = %s"
                " AND column_name <> 'thread_id' ORDER BY ordinal_position",
                (table,),
            )
            columns = ", ".join(f'"{r["column_name"]}"' for r in await cursor.fetchall())
            # The names come from the tuple above and from the catalog.
            inserted = await conn.execute(
                f"INSERT INTO {table} (thread_id, {columns})"
                f" SELECT %s, {columns} FROM {table} WHERE thread_id = %s",
                (new_id, thread_id),
                prepare=False,
            )
            if table == "checkpoints":
                copied = inserted.rowcount
    return copied
