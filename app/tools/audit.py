"""The audit log: one row per tool call, in Postgres: thread, step, agent, tool, arguments
(secrets redacted), result size, status, duration and the approval that allowed it."""

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from app.pg import create_schema

CallStatus = Literal["ok", "refused", "invalid", "failed"]
REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[-_]?key|auth|credential|private[-_]?key|cookie",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"\b(?:sk|ag|ghp|xox[abp])[-_][A-Za-z0-9_-]{12,}\b|\bBearer\s+[A-Za-z0-9._~+/=-]{12,}"
)
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS agentgraph_tool_audit (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        thread_id text NOT NULL,
        step_id text NOT NULL,
        agent text NOT NULL,
        tool text NOT NULL,
        arguments jsonb NOT NULL,
        status text NOT NULL,
        result_chars integer NOT NULL,
        duration_ms double precision NOT NULL,
        approval text,
        error text,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX IF NOT EXISTS agentgraph_tool_audit_thread "
    "ON agentgraph_tool_audit (thread_id, id)",
)


def redact(value: Any) -> Any:
    """Replace secrets in a call's arguments: values under secret-sounding keys, and strings
    that look like keys or bearer tokens anywhere."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value


@dataclass(frozen=True)
class ToolCall:
    """One audited call."""

    thread_id: str
    step_id: str
    agent: str
    tool: str
    arguments: dict[str, Any]
    status: CallStatus
    result_chars: int
    duration_ms: float
    approval: str | None = None
    """Who approved the step that made the call (`tenant/key`, or `policy` when none was
    needed)."""
    error: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class AuditLog:
    """The audit table, on the app's pool."""

    pool: AsyncConnectionPool[Any]

    async def setup(self) -> None:
        """Create the table if it is missing, one process at a time."""
        await create_schema(self.pool, *_SCHEMA)

    async def record(self, call: ToolCall) -> None:
        """Append a call, its arguments redacted."""
        async with self.pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO agentgraph_tool_audit (thread_id, step_id, agent, tool, arguments,
                    status, result_chars, duration_ms, approval, error)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                """,
                (
                    call.thread_id,
                    call.step_id,
                    call.agent,
                    call.tool,
                    Jsonb(redact(call.arguments)),
                    call.status,
                    call.result_chars,
                    call.duration_ms,
                    call.approval,
                    call.error,
                ),
            )

    async def calls(self, thread_id: str) -> list[ToolCall]:
        """A thread's calls, oldest first."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """
                SELECT thread_id, step_id, agent, tool, arguments, status, result_chars,
                    duration_ms, approval, error, created_at
                FROM agentgraph_tool_audit WHERE thread_id = %s ORDER BY id
                """,
                (thread_id,),
            )
            return [ToolCall(**row) for row in await cur.fetchall()]

    async def forget(self, thread_id: str) -> None:
        """Delete a thread's calls (with the thread)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "DELETE FROM agentgraph_tool_audit WHERE thread_id = %s", (thread_id,)
            )
