"""What the database says at scrape time, for the gauges of `/metrics`
(`app.telemetry.metrics.DatabaseFigures`): approvals waiting and escalated, queued jobs,
pools' use."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from app.telemetry.metrics import DatabaseFigures, PoolFigures
from graphs.escalations import escalated_waiting
from graphs.inbox import waiting_summary
from graphs.queue import QUEUE

JOB_STATUSES = ("todo", "doing")
"""The queue's jobs counted: waiting to be taken, and being executed."""


async def queue_jobs(pool: AsyncConnectionPool[Any]) -> dict[str, int]:
    """Background-run jobs in the queue by status (`JOB_STATUSES`, each present)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT status::text AS status, count(*) AS jobs FROM procrastinate_jobs"
            " WHERE queue_name = %s AND status = ANY(%s::procrastinate_job_status[])"
            " GROUP BY status",
            (QUEUE, list(JOB_STATUSES)),
        )
        rows = await cursor.fetchall()
    found = {str(row["status"]): int(row["jobs"]) for row in rows}
    return {status: found.get(status, 0) for status in JOB_STATUSES}


def pool_figures(pool: AsyncConnectionPool[Any]) -> PoolFigures:
    """A pool's use, from psycopg_pool's statistics."""
    stats = pool.get_stats()
    return PoolFigures(
        size=stats.get("pool_size", 0),
        idle=stats.get("pool_available", 0),
        max=stats.get("pool_max", pool.max_size),
        waiting=stats.get("requests_waiting", 0),
    )


async def database_figures(
    pool: AsyncConnectionPool[Any], pools: Mapping[str, AsyncConnectionPool[Any]]
) -> DatabaseFigures:
    """Read the figures through `pool`; `pools` are the process's pools, by name.

    Raises:
        psycopg.Error: the database cannot be read.
    """
    waiting, since = await waiting_summary(pool)
    oldest = (datetime.now(UTC) - since).total_seconds() if since is not None else 0.0
    return DatabaseFigures(
        approvals_waiting=waiting,
        oldest_approval_wait_s=max(0.0, oldest),
        approvals_escalated=await escalated_waiting(pool),
        queue_jobs=await queue_jobs(pool),
        pools={name: pool_figures(p) for name, p in pools.items()},
    )
