"""Threads as the LangGraph Agent API knows them: made before their first run, with metadata.

A thread of agentgraph is its checkpoints; a thread made with `POST /threads` has none until
its first run, so it is a row of `agentgraph_threads` (id, metadata, times) until then, and
keeps the row for its metadata. Searching lists both: rows, and threads known only from their
checkpoints (runs of the CLI or the native API).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from app.pg import create_schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS agentgraph_threads (
    thread_id text PRIMARY KEY,
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class ThreadRecord:
    """A thread's id, metadata and times."""

    thread_id: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


async def setup_thread_records(pool: AsyncConnectionPool[Any]) -> None:
    """Create the table, one process at a time."""
    await create_schema(pool, SCHEMA)


async def create_record(
    pool: AsyncConnectionPool[Any], thread_id: str, metadata: dict[str, Any]
) -> bool:
    """Record a thread; return False when it was recorded already (nothing changes)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "INSERT INTO agentgraph_threads (thread_id, metadata) VALUES (%s, %s)"
            " ON CONFLICT (thread_id) DO NOTHING",
            (thread_id, Jsonb(metadata)),
        )
        created: bool = cursor.rowcount == 1
    return created


async def touch_record(pool: AsyncConnectionPool[Any], thread_id: str) -> None:
    """Record a thread that a run is about to use (its updated time: now)."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO agentgraph_threads (thread_id) VALUES (%s)"
            " ON CONFLICT (thread_id) DO UPDATE SET updated_at = now()",
            (thread_id,),
        )


async def update_metadata(
    pool: AsyncConnectionPool[Any], thread_id: str, metadata: dict[str, Any]
) -> None:
    """Merge `metadata` into the thread's (recording the thread if need be)."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO agentgraph_threads (thread_id, metadata) VALUES (%s, %s)"
            " ON CONFLICT (thread_id) DO UPDATE SET"
            " metadata = agentgraph_threads.metadata || EXCLUDED.metadata, updated_at = now()",
            (thread_id, Jsonb(metadata)),
        )


_KNOWN = """
WITH stored AS (
    SELECT thread_id, min(checkpoint_id) AS first_id, max(checkpoint_id) AS last_id
    FROM checkpoints WHERE checkpoint_ns = '' GROUP BY thread_id
), known AS (
    SELECT s.thread_id, (f.checkpoint->>'ts')::timestamptz AS first_at,
           (l.checkpoint->>'ts')::timestamptz AS last_at
    FROM stored s
    JOIN checkpoints f ON f.thread_id = s.thread_id AND f.checkpoint_ns = ''
                      AND f.checkpoint_id = s.first_id
    JOIN checkpoints l ON l.thread_id = s.thread_id AND l.checkpoint_ns = ''
                      AND l.checkpoint_id = s.last_id
), threads AS (
    SELECT coalesce(t.thread_id, k.thread_id) AS thread_id,
           coalesce(t.metadata, '{}'::jsonb) AS metadata,
           least(t.created_at, k.first_at) AS created_at,
           greatest(t.updated_at, k.last_at) AS updated_at
    FROM agentgraph_threads t FULL OUTER JOIN known k ON k.thread_id = t.thread_id
)
"""


async def get_record(pool: AsyncConnectionPool[Any], thread_id: str) -> ThreadRecord | None:
    """The thread, from its row or its checkpoints; None when neither exists."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT metadata, created_at, updated_at FROM agentgraph_threads WHERE thread_id = %s",
            (thread_id,),
        )
        row = await cursor.fetchone()
        cursor = await conn.execute(
            "SELECT min((checkpoint->>'ts')::timestamptz) AS first_at,"
            " max((checkpoint->>'ts')::timestamptz) AS last_at"
            " FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = ''",
            (thread_id,),
        )
        stored = await cursor.fetchone()
    first_at, last_at = (stored["first_at"], stored["last_at"]) if stored else (None, None)
    if row is None:
        return ThreadRecord(thread_id, {}, first_at, last_at) if first_at and last_at else None
    return ThreadRecord(
        thread_id,
        row["metadata"],
        min(row["created_at"], first_at) if first_at else row["created_at"],
        max(row["updated_at"], last_at) if last_at else row["updated_at"],
    )


async def search_records(
    pool: AsyncConnectionPool[Any],
    *,
    metadata: dict[str, Any],
    tenant: str | None,
    limit: int,
    offset: int,
) -> list[ThreadRecord]:
    """Threads whose metadata holds `metadata` (of `tenant`, when given), the most recently
    updated first."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            _KNOWN + "SELECT * FROM threads WHERE metadata @> %(metadata)s"
            " AND (%(tenant)s::text IS NULL OR thread_id IN"
            " (SELECT thread_id FROM agentgraph_thread_owners WHERE tenant = %(tenant)s))"
            " ORDER BY updated_at DESC NULLS LAST LIMIT %(limit)s OFFSET %(offset)s",
            {"metadata": Jsonb(metadata), "tenant": tenant, "limit": limit, "offset": offset},
            prepare=False,
        )
        return [ThreadRecord(**row) for row in await cursor.fetchall()]


async def count_records(
    pool: AsyncConnectionPool[Any], *, metadata: dict[str, Any], tenant: str | None
) -> int:
    """How many threads `search_records` finds, counted in Postgres."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            _KNOWN + "SELECT count(*) AS n FROM threads WHERE metadata @> %(metadata)s"
            " AND (%(tenant)s::text IS NULL OR thread_id IN"
            " (SELECT thread_id FROM agentgraph_thread_owners WHERE tenant = %(tenant)s))",
            {"metadata": Jsonb(metadata), "tenant": tenant},
            prepare=False,
        )
        row = await cursor.fetchone()
        return int(row["n"]) if row else 0
