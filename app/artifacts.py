"""Artefacts: files, tables and JSON that a step produces, stored in Postgres by content.

A step stores what it produced here and keeps only the artefact's id, name, media type and
size in its result, so the content is never inlined in a checkpoint. An artefact's id is the
SHA-256 of its content: the same content stored twice in one thread is one row (a retried
step stores nothing new). Artefacts live as long as their thread, and go with it.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from app.pg import create_schema

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS agentgraph_artifacts (
        thread_id text NOT NULL,
        artifact_id text NOT NULL,
        step_id text NOT NULL,
        name text NOT NULL,
        media_type text NOT NULL,
        size integer NOT NULL,
        content bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (thread_id, artifact_id)
    )
    """,
)


@dataclass(frozen=True)
class Artifact:
    """One stored artefact, without its content."""

    artifact_id: str
    thread_id: str
    step_id: str
    name: str
    media_type: str
    size: int
    created_at: datetime | None = None


def content_id(content: bytes) -> str:
    """Return the id an artefact of this content gets: its SHA-256, in hex."""
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class ArtifactStore:
    """The artefacts table, on the app's pool."""

    pool: AsyncConnectionPool[Any]

    async def setup(self) -> None:
        """Create the table if it is missing, one process at a time."""
        await create_schema(self.pool, *_SCHEMA)

    async def put(
        self, thread_id: str, step_id: str, *, name: str, media_type: str, content: bytes
    ) -> Artifact:
        """Store `content` for a thread's step; content the thread holds already is kept
        once (its first name and step stay)."""
        artifact = Artifact(
            artifact_id=content_id(content),
            thread_id=thread_id,
            step_id=step_id,
            name=name,
            media_type=media_type,
            size=len(content),
        )
        async with self.pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO agentgraph_artifacts
                    (thread_id, artifact_id, step_id, name, media_type, size, content)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (thread_id, artifact_id) DO NOTHING
                """,
                (
                    thread_id,
                    artifact.artifact_id,
                    step_id,
                    name,
                    media_type,
                    artifact.size,
                    content,
                ),
            )
        return artifact

    async def list(self, thread_id: str) -> list[Artifact]:
        """A thread's artefacts, oldest first."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """
                SELECT artifact_id, thread_id, step_id, name, media_type, size, created_at
                FROM agentgraph_artifacts WHERE thread_id = %s ORDER BY created_at, name
                """,
                (thread_id,),
            )
            return [Artifact(**row) for row in await cur.fetchall()]

    async def get(self, thread_id: str, artifact_id: str) -> tuple[Artifact, bytes] | None:
        """One artefact of a thread with its content, or None when it has no such one."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """
                SELECT artifact_id, thread_id, step_id, name, media_type, size, created_at,
                    content
                FROM agentgraph_artifacts WHERE thread_id = %s AND artifact_id = %s
                """,
                (thread_id, artifact_id),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        content = bytes(row.pop("content"))
        return Artifact(**row), content
