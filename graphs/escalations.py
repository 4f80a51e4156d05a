"""Escalated approvals: gates whose deadline passed with `escalate`, and still wait.

An escalation cannot be written into the thread's state: a new checkpoint would drop the
pending interrupt. So it is a row of its own, keyed by the thread and the checkpoint that
waits, written once however many processes see the deadline pass (`ON CONFLICT DO
NOTHING`). A row names one interrupt: once the thread moves on (a person answers), its
latest checkpoint is another one and the row no longer flags it; the row stays as the
record of what the deadline did.
"""

from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool
from typing_extensions import TypedDict

from app.pg import create_schema


class Escalation(TypedDict):
    """A gate that its deadline escalated."""

    escalated_at: datetime
    reason: str


async def setup_escalations(pool: AsyncConnectionPool[Any]) -> None:
    """Create the escalations table, one process at a time."""
    await create_schema(
        pool,
        """
        CREATE TABLE IF NOT EXISTS agentgraph_escalations (
            thread_id text NOT NULL,
            checkpoint_id text NOT NULL,
            escalated_at timestamptz NOT NULL DEFAULT now(),
            reason text NOT NULL,
            PRIMARY KEY (thread_id, checkpoint_id)
        )
        """,
    )


async def escalate(
    pool: AsyncConnectionPool[Any], thread_id: str, checkpoint_id: str, reason: str
) -> bool:
    """Flag the gate that waits at `checkpoint_id` as escalated; return whether this call
    did it (False: another process, or an earlier call, had)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "INSERT INTO agentgraph_escalations (thread_id, checkpoint_id, reason)"
            " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (thread_id, checkpoint_id, reason),
        )
        inserted: bool = cursor.rowcount == 1
    return inserted


async def escalations_of(
    pool: AsyncConnectionPool[Any], waiting: list[tuple[str, str]]
) -> dict[tuple[str, str], Escalation]:
    """The escalations among `waiting` (thread id, checkpoint id) pairs."""
    if not waiting:
        return {}
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT e.thread_id, e.checkpoint_id, e.escalated_at, e.reason"
            " FROM agentgraph_escalations e"
            " JOIN unnest(%s::text[], %s::text[]) AS w(thread_id, checkpoint_id)"
            " USING (thread_id, checkpoint_id)",
            ([t for t, _ in waiting], [c for _, c in waiting]),
        )
        rows = await cursor.fetchall()
    return {
        (row["thread_id"], row["checkpoint_id"]): Escalation(
            escalated_at=row["escalated_at"], reason=row["reason"]
        )
        for row in rows
    }


async def escalated_waiting(pool: AsyncConnectionPool[Any]) -> int:
    """How many threads wait at a gate that its deadline escalated: the escalated checkpoint
    is still the thread's latest, so nobody has answered it."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            """
            SELECT count(*) AS escalated FROM agentgraph_escalations e
            WHERE e.checkpoint_id = (
                SELECT max(l.checkpoint_id) FROM checkpoints l
                WHERE l.thread_id = e.thread_id AND l.checkpoint_ns = ''
            )
            """
        )
        row = await cursor.fetchone()
    return int(row["escalated"]) if row else 0
