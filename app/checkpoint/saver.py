"""The checkpointer: `AsyncPostgresSaver` on a connection pool, its writes committed in groups.

It leans on private parts of `langgraph-checkpoint-postgres` (`_dump_blobs`, `_dump_writes`,
`_cursor`, the row layout of its tables, and `_DeltaSnapshot` of `langgraph-checkpoint`), so
both packages are pinned to their minor versions in pyproject.toml: a new minor release is
to be read against this module before the pin moves.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
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

from app.checkpoint.batching import GroupCommit, Statement
from app.checkpoint.sql import put_checkpoint_sql, put_writes_sql
from app.pg import SETUP_LOCK_KEY

NEW_THREAD = "__agentgraph_new_thread"
"""A `configurable` key: the run's thread id was just made up, so it has no checkpoint yet."""
UNFLUSHED_WRITES = "__agentgraph_unflushed_writes"
"""A `configurable` key: the saver may return before a write of this run is committed, and
whoever set it calls `Saver.flush(thread_id)` before the run counts as ended."""
ON_WRITES_COMMITTED = "__agentgraph_on_writes_committed"
"""A `configurable` key: a function the saver calls, in the event loop, with a task's writes
(`(channel, value)` pairs) once they are committed."""


class Saver(AsyncPostgresSaver):
    """`AsyncPostgresSaver` on a connection pool: one statement per write, and the writes of
    many threads committed together.

    The library's saver is built to share one connection too: every operation waits for one
    `asyncio.Lock`, so one saver stores one checkpoint at a time however large its pool.
    It sends a checkpoint as a pipeline of two statements, and serialises in a worker
    thread. On a pool none of that is needed: a checkpoint and its new channel values go in
    one statement, a task's writes in another, and the (small) values are serialised in the
    event loop.

    Writes are committed in groups (`app.checkpoint.batching.GroupCommit`): a task's writes together
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
    ) -> asyncio.Future[None]:
        """Commit a write of the addressed thread; return at once for a run that flushes.

        Returns:
            The write's commit, done when it is committed (or failed to be).
        """
        thread_id = configurable["thread_id"]
        stored = self._commits.enqueue(thread_id, statement, deferrable=deferrable)
        if configurable.get(UNFLUSHED_WRITES):
            self._unflushed.setdefault(thread_id, []).append(stored)
        else:
            await stored
        return stored

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
        await self._store(configurable, (put_checkpoint_sql(len(rows)), params))
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
        stored = await self._store(
            configurable, (put_writes_sql(len(by_idx), upsert), values), deferrable=True
        )
        on_committed = configurable.get(ON_WRITES_COMMITTED)
        if on_committed is not None:
            stored.add_done_callback(
                lambda done: None if done.cancelled() or done.exception() else on_committed(writes)
            )


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
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (SETUP_LOCK_KEY,))
            row = await cursor.fetchone()
            if row and row["got"]:
                break
            await asyncio.sleep(0.05)
        try:
            await saver.setup()
            await conn.execute(_DROP_REDUNDANT_INDEXES)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))
