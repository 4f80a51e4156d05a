"""The approvals inbox: a small table of the threads that wait for a person.

The server writes it when one of its runs stops at an interrupt and clears it when a run of
the thread starts. A table rather than a query over the checkpoint tables: listing waiting
threads then costs one indexed read instead of loading the latest checkpoint of every thread,
and it does not depend on how the saver encodes pending interrupts (an internal format that
changes between versions). The price: runs started outside the server (the CLI) are listed
only after the server has touched them.
"""

from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

# Any fixed 64-bit number: serialises creating the table across processes.
_SETUP_LOCK_KEY = 7_310_586_331_045_411_777


async def setup_inbox(pool: AsyncConnectionPool[Any]) -> None:
    """Create the inbox table if it does not exist, one process at a time."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK_KEY,))
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS agentgraph_pending_approvals (
                thread_id text PRIMARY KEY,
                payload jsonb NOT NULL,
                waiting_since timestamptz NOT NULL DEFAULT now()
            )
            """
        )


async def mark_pending(
    pool: AsyncConnectionPool[Any], thread_id: str, payload: dict[str, Any]
) -> None:
    """Record that a thread waits for a decision (a new interrupt restarts the clock)."""
    async with pool.connection() as conn:
        await conn.execute(
            """
            INSERT INTO agentgraph_pending_approvals (thread_id, payload) VALUES (%s, %s)
            ON CONFLICT (thread_id) DO UPDATE
            SET payload = EXCLUDED.payload, waiting_since = now()
            """,
            (thread_id, Jsonb(payload)),
        )


async def clear_pending(pool: AsyncConnectionPool[Any], thread_id: str) -> None:
    """Record that a thread no longer waits."""
    async with pool.connection() as conn:
        await conn.execute(
            "DELETE FROM agentgraph_pending_approvals WHERE thread_id = %s", (thread_id,)
        )


async def list_pending(pool: AsyncConnectionPool[Any], *, limit: int) -> list[dict[str, Any]]:
    """Return the waiting threads, longest waiting first."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            """
            SELECT thread_id, payload, waiting_since,
                   extract(epoch FROM now() - waiting_since)::float8 AS waiting_s
            FROM agentgraph_pending_approvals ORDER BY waiting_since LIMIT %s
            """,
            (limit,),
        )
        rows: list[dict[str, Any]] = await cursor.fetchall()
    return rows
