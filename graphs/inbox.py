"""The approvals inbox: every thread waiting for a person, read from the checkpoints themselves.

A thread waits for a person when its latest checkpoint has an interrupt that no finished task
answered. That is true whichever process stopped it (this server, another replica, the CLI,
a notebook) and stops being true whichever process resumed it, so the inbox is derived from
the checkpoint tables rather than kept in a table of its own that only some writers update.

One query finds the candidates: threads whose latest checkpoint carries an interrupt write (a
small partial index on the checkpointer's writes table keeps it from scanning every write).
Each candidate is then confirmed, and its question read, through the graph's own state
(`aget_state`), the same reading that the thread view and a resume use: the inbox never lists
a thread that a resume would refuse. A thread waits since its latest checkpoint was written:
the approval gates run alone in their step, right after it.
"""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool
from typing_extensions import TypedDict

from graphs.agent import AgentGraph
from graphs.runs import thread_config

# The channel LangGraph writes a task's interrupt to (`langgraph._internal._constants`).
INTERRUPT_CHANNEL = "__interrupt__"
# Any fixed 64-bit number: serialises the inbox's set-up across processes.
_SETUP_LOCK_KEY = 7_310_586_331_045_411_777


class PendingApproval(TypedDict):
    """A thread waiting for a person's decision."""

    thread_id: str
    checkpoint_id: str
    payload: dict[str, Any]
    waiting_since: datetime
    waiting_s: float


async def setup_inbox(pool: AsyncConnectionPool[Any]) -> None:
    """Index the interrupt writes, one process at a time (after the checkpointer's set-up)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK_KEY,))
        await conn.execute(
            f"""
            CREATE INDEX IF NOT EXISTS agentgraph_interrupt_writes_idx
            ON checkpoint_writes (thread_id, checkpoint_id)
            WHERE channel = '{INTERRUPT_CHANNEL}' AND checkpoint_ns = ''
            """
        )
        # The table an earlier version kept by hand; the checkpoints now say it all.
        await conn.execute("DROP TABLE IF EXISTS agentgraph_pending_approvals")


async def _candidates(pool: AsyncConnectionPool[Any]) -> list[str]:
    """Threads whose latest checkpoint has an interrupt write, longest waiting first."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"""
            SELECT w.thread_id, min((c.checkpoint->>'ts')::timestamptz) AS since
            FROM checkpoint_writes w
            JOIN checkpoints c USING (thread_id, checkpoint_ns, checkpoint_id)
            WHERE w.channel = '{INTERRUPT_CHANNEL}' AND w.checkpoint_ns = ''
              AND w.checkpoint_id = (
                  SELECT max(l.checkpoint_id) FROM checkpoints l
                  WHERE l.thread_id = w.thread_id AND l.checkpoint_ns = ''
              )
            GROUP BY w.thread_id
            ORDER BY since, w.thread_id
            """
        )
        rows = await cursor.fetchall()
    return [str(row["thread_id"]) for row in rows]


async def list_pending(
    graph: AgentGraph,
    pool: AsyncConnectionPool[Any],
    *,
    limit: int,
    visible: Callable[[list[str]], Awaitable[set[str]]] | None = None,
) -> list[PendingApproval]:
    """Return up to `limit` threads waiting for a person, longest waiting first; with
    `visible`, only those of the candidates it lets through (a tenant's threads)."""
    now = datetime.now(UTC)
    found: list[PendingApproval] = []
    candidates = await _candidates(pool)
    if visible is not None:
        allowed = await visible(candidates)
        candidates = [c for c in candidates if c in allowed]
    for thread_id in candidates:
        if len(found) >= limit:
            break
        snapshot = await graph.aget_state(thread_config(thread_id))
        if not snapshot.interrupts or snapshot.created_at is None:
            continue  # answered since the query, or its task finished in a step still open
        since = datetime.fromisoformat(snapshot.created_at)
        found.append(
            PendingApproval(
                thread_id=thread_id,
                checkpoint_id=snapshot.config["configurable"]["checkpoint_id"],
                payload=snapshot.interrupts[0].value,
                waiting_since=since,
                waiting_s=max(0.0, (now - since).total_seconds()),
            )
        )
    return found
