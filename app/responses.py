"""Stored responses of the OpenAI Responses API: which thread a response id belongs to, and
the response as it was sent, so that `previous_response_id` continues that thread and
`GET /v1/responses/{id}` returns it again.

A response is small (the answer's text and its citations; the run itself is in the thread's
checkpoints). Deleting a thread deletes its responses; pruning old checkpoints keeps them.
"""

from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from app.pg import create_schema

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS agentgraph_responses (
        id text PRIMARY KEY,
        thread_id text NOT NULL,
        tenant text NOT NULL,
        body jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX IF NOT EXISTS agentgraph_responses_thread ON agentgraph_responses (thread_id)",
)


@dataclass(frozen=True)
class StoredResponse:
    """A response as it was sent, and the thread it ran on."""

    thread_id: str
    tenant: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Responses:
    """The responses table, on the app's pool."""

    pool: AsyncConnectionPool[Any]

    async def setup(self) -> None:
        """Create the table if it is missing, one process at a time."""
        await create_schema(self.pool, *_SCHEMA)

    async def save(
        self, response_id: str, *, thread_id: str, tenant: str, body: dict[str, Any]
    ) -> None:
        """Store a response (again, if it was stored in progress)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO agentgraph_responses (id, thread_id, tenant, body)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (id) DO UPDATE SET body = excluded.body
                """,
                (response_id, thread_id, tenant, Jsonb(body)),
            )

    async def get(self, response_id: str) -> StoredResponse | None:
        """The stored response of that id, if there is one."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT thread_id, tenant, body FROM agentgraph_responses WHERE id = %s",
                (response_id,),
            )
            row = await cursor.fetchone()
        if row is None:
            return None
        return StoredResponse(thread_id=row["thread_id"], tenant=row["tenant"], body=row["body"])

    async def delete(self, response_id: str) -> None:
        """Delete one stored response."""
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM agentgraph_responses WHERE id = %s", (response_id,))

    async def forget(self, thread_id: str) -> None:
        """Delete every stored response of a thread (it was deleted)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "DELETE FROM agentgraph_responses WHERE thread_id = %s", (thread_id,)
            )
