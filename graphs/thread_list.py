"""Recent threads at a glance: status, question, tokens, cost, age and who started each.

The candidates come from the checkpoint tables, the most recently active first (and, for a
tenant, only the threads it owns); each is then described through `view_thread`, the same
reading every other surface uses, and a run holding it (`graphs.locks`) makes it `running`.
A status filter reads candidates in batches until enough match.
"""

from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool
from typing_extensions import TypedDict

from app.errors import ThreadNotFoundError
from graphs.agent import AgentGraph
from graphs.locks import locked_threads
from graphs.threads import ThreadStatus, run_state, view_thread

BATCH = 100
"""Candidates read at once while a status filter looks for matches."""
MAX_SCANNED = 2_000
"""Most candidates a status filter reads before it answers with what it found."""

_CANDIDATES = """
WITH latest AS (
    SELECT thread_id, min(checkpoint_id) AS first_id, max(checkpoint_id) AS last_id
    FROM checkpoints WHERE checkpoint_ns = ''
      AND (%(tenant)s::text IS NULL OR thread_id IN
           (SELECT thread_id FROM agentgraph_thread_owners WHERE tenant = %(tenant)s))
    GROUP BY thread_id
    ORDER BY max(checkpoint_id) DESC
    LIMIT %(limit)s OFFSET %(offset)s
)
SELECT l.thread_id,
       (f.checkpoint->>'ts')::timestamptz AS created_at,
       (c.checkpoint->>'ts')::timestamptz AS updated_at,
       o.tenant,
       (SELECT r.started_by FROM agentgraph_runs r WHERE r.thread_id = l.thread_id
        ORDER BY r.created_at LIMIT 1) AS started_by
FROM latest l
JOIN checkpoints f ON f.thread_id = l.thread_id AND f.checkpoint_ns = ''
                  AND f.checkpoint_id = l.first_id
JOIN checkpoints c ON c.thread_id = l.thread_id AND c.checkpoint_ns = ''
                  AND c.checkpoint_id = l.last_id
LEFT JOIN agentgraph_thread_owners o ON o.thread_id = l.thread_id
ORDER BY l.last_id DESC
"""


class ThreadSummary(TypedDict):
    """One line of the list of recent threads."""

    thread_id: str
    status: ThreadStatus
    question: str | None
    total_tokens: int
    total_cost: float
    created_at: datetime
    updated_at: datetime
    age_s: float
    """Seconds since the thread last changed."""
    started_by: str | None
    """The key (`tenant/key id`) that queued its first background run, else the tenant that
    owns it; None for a thread run with keys off."""
    tenant: str | None


async def _candidates(
    pool: AsyncConnectionPool[Any], *, tenant: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            _CANDIDATES,
            {"tenant": tenant, "limit": limit, "offset": offset},
            prepare=False,
        )
        rows: list[dict[str, Any]] = await cursor.fetchall()
    return rows


async def recent_threads(
    graph: AgentGraph,
    pool: AsyncConnectionPool[Any],
    *,
    status: ThreadStatus | None = None,
    tenant: str | None = None,
    limit: int = 50,
) -> list[ThreadSummary]:
    """Return up to `limit` threads, the most recently active first; with `status`, only
    those in it, and with `tenant`, only that tenant's."""
    now = datetime.now(UTC)
    found: list[ThreadSummary] = []
    offset = 0
    while len(found) < limit and offset < MAX_SCANNED:
        size = limit if status is None else BATCH
        rows = await _candidates(pool, tenant=tenant, limit=size, offset=offset)
        offset += size
        if not rows:
            break
        async with pool.connection() as conn:
            running = await locked_threads(conn, [r["thread_id"] for r in rows])
        for row in rows:
            try:
                view = await view_thread(graph, row["thread_id"])
            except ThreadNotFoundError:
                continue  # deleted since the query
            state, _ = run_state(view, running=row["thread_id"] in running)
            if status is not None and state != status:
                continue
            report = view["report"]
            found.append(
                ThreadSummary(
                    thread_id=row["thread_id"],
                    status=state,
                    question=view["request"],
                    total_tokens=report["total_tokens"] if report else 0,
                    total_cost=report["total_cost"] if report else 0.0,
                    created_at=row["created_at"],
                    updated_at=row["updated_at"],
                    age_s=max(0.0, (now - row["updated_at"]).total_seconds()),
                    started_by=row["started_by"] or row["tenant"],
                    tenant=row["tenant"],
                )
            )
            if len(found) >= limit:
                break
        if status is None:
            break
    return found
