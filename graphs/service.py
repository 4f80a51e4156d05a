"""Open everything a process needs to run the agent: the database, the saver, the graph."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from app.artifacts import ArtifactStore
from app.db import Database, open_database
from app.settings import Settings
from app.tools.audit import AuditLog
from app.tools.manifest import Manifest, load_manifest
from app.tools.mcp import open_mcp_tools
from graphs.agent import AgentGraph, compile_graph
from graphs.escalations import setup_escalations
from graphs.run_log import setup_run_log
from graphs.run_records import setup_run_records
from graphs.thread_records import setup_thread_records
from nodes.toolbox import Toolbox, build_toolbox
from retrievers.service import Library


@dataclass(frozen=True)
class Agent:
    """The compiled graph with its Postgres checkpointer, and the database under it."""

    graph: AgentGraph
    db: Database
    library: Library
    """The document collections in the agent's database, which its rag steps search."""
    audit: AuditLog
    """Every tool call of the agent's tool steps."""
    toolbox: Toolbox
    """The manifest's agents, their tools and the policy."""
    artifacts: ArtifactStore
    """What the agent's steps produced beside their answers (`nodes.artifacts`)."""

    async def list_threads(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Return the most recently active threads, newest first."""
        async with self.db.pool.connection() as conn:
            cursor = await conn.execute(
                """
                SELECT thread_id, count(*) AS checkpoints, max(checkpoint_id) AS latest
                FROM checkpoints WHERE checkpoint_ns = ''
                GROUP BY thread_id ORDER BY max(checkpoint_id) DESC LIMIT %s
                """,
                (limit,),
            )
            rows: list[dict[str, Any]] = await cursor.fetchall()
        return rows


@asynccontextmanager
async def open_agent(
    settings: Settings, *, url: str | None = None, manifest: Manifest | None = None
) -> AsyncIterator[Agent]:
    """Open the pool and the saver, set up its tables, start the manifest's MCP servers, and
    compile the graph over them. `manifest` stands in for the settings' one.

    Raises:
        ManifestError: the manifest is invalid, or grants a tool its MCP server lacks.
        ConfigError: an MCP server cannot be started.
    """
    manifest = manifest or load_manifest(settings.manifest)
    async with open_database(settings, url=url) as db, open_mcp_tools(manifest.mcp_servers) as mcp:
        # Rag steps search the agent's database, with the process's embedding model.
        library = Library(url=db.url, pool=db.pool, settings=settings)
        audit = AuditLog(db.pool)
        await audit.setup()
        await setup_run_log(db.pool)
        await setup_thread_records(db.pool)
        artifacts = ArtifactStore(db.pool)
        await artifacts.setup()
        await setup_run_records(db.pool)
        await setup_escalations(db.pool)
        toolbox = build_toolbox(manifest, library=library, extra_tools=mcp)
        graph = compile_graph(
            db.saver,
            step_timeout_s=settings.step_timeout_s,
            step_attempts=settings.step_attempts,
            library=library,
            audit=audit,
            toolbox=toolbox,
            artifacts=artifacts,
        )
        yield Agent(
            graph=graph,
            db=db,
            library=library,
            audit=audit,
            toolbox=toolbox,
            artifacts=artifacts,
        )
