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

A gate with a deadline (`approval_timeout`) carries it in its payload; the inbox shows it,
the time left, and whether the deadline escalated the gate (`graphs.escalations`).
"""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool
from typing_extensions import TypedDict

from app.pg import create_schema
from graphs.agent import AgentGraph
from graphs.escalations import escalations_of, setup_escalations
from graphs.runs import thread_config

# The channel LangGraph writes a task's interrupt to (`langgraph._internal._constants`).
INTERRUPT_CHANNEL = "__interrupt__"


class PendingApproval(TypedDict):
    """A thread waiting for a person's decision."""

    thread_id: str
    checkpoint_id: str
    payload: dict[str, Any]
    waiting_since: datetime
    waiting_s: float
    deadline: datetime | None
    """When the gate stops waiting (`approval_timeout`); None: never."""
    time_left_s: float | None
    """Seconds to the deadline (0 once it passed); None without one."""
    escalated: bool
    """The deadline passed and escalated the gate: it waits, flagged."""
    escalation: str | None
    """Why it was escalated."""


async def setup_inbox(pool: AsyncConnectionPool[Any]) -> None:
    """Index the interrupt writes, one process at a time (after the checkpointer's set-up)."""
    await create_schema(
        pool,
        f"""
        CREATE INDEX IF NOT EXISTS agentgraph_interrupt_writes_idx
        ON checkpoint_writes (thread_id, checkpoint_id)
        WHERE channel = '{INTERRUPT_CHANNEL}' AND checkpoint_ns = ''
        """,
        # The table an earlier version kept by hand; the checkpoints now say it all.
        "DROP TABLE IF EXISTS agentgraph_pending_approvals",
    )
    await setup_escalations(pool)


async def _candidates(pool: AsyncConnectionPool[Any]) -> list[str]:
    """Threads whose latest checkpoint has an interrupt write, longest waiting first."""
    return [thread_id for thread_id, _, _ in await _waiting(pool)]


async def waiting_checkpoints(pool: AsyncConnectionPool[Any]) -> list[tuple[str, str]]:
    """The candidates of `list_pending` as (thread id, id of the checkpoint that waits),
    longest waiting first, not yet confirmed one by one."""
    return [(thread_id, checkpoint_id) for thread_id, checkpoint_id, _ in await _waiting(pool)]


async def waiting_summary(pool: AsyncConnectionPool[Any]) -> tuple[int, datetime | None]:
    """How many threads wait for a person and since when the longest has waited, in one
    query: the candidates `list_pending` starts from, not yet confirmed one by one (a
    thread answered this very moment may still count)."""
    waiting = await _waiting(pool)
    return len(waiting), (waiting[0][2] if waiting else None)


async def _waiting(pool: AsyncConnectionPool[Any]) -> list[tuple[str, str, datetime]]:
    """Threads whose latest checkpoint has an interrupt write, with that checkpoint's id and
    the time it was written, longest waiting first."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"""
            SELECT w.thread_id, max(w.checkpoint_id) AS checkpoint_id,
                   min((c.checkpoint->>'ts')::timestamptz) AS since
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
    return [(str(row["thread_id"]), str(row["checkpoint_id"]), row["since"]) for row in rows]


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
        payload = snapshot.interrupts[0].value
        deadline = deadline_of(payload)
        found.append(
            PendingApproval(
                thread_id=thread_id,
                checkpoint_id=snapshot.config["configurable"]["checkpoint_id"],
                payload=payload,
                waiting_since=since,
                waiting_s=max(0.0, (now - since).total_seconds()),
                deadline=deadline,
                time_left_s=None
                if deadline is None
                else max(0.0, (deadline - now).total_seconds()),
                escalated=False,
                escalation=None,
            )
        )
    flagged = await escalations_of(pool, [(p["thread_id"], p["checkpoint_id"]) for p in found])
    for pending in found:
        escalation = flagged.get((pending["thread_id"], pending["checkpoint_id"]))
        if escalation is not None:
            pending["escalated"], pending["escalation"] = True, escalation["reason"]
    return found


def deadline_of(payload: object) -> datetime | None:
    """The deadline an interrupt's payload carries (`nodes.approval.with_deadline`), if any."""
    raw = payload.get("deadline") if isinstance(payload, dict) else None
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None
