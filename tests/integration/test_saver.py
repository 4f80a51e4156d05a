"""`app.checkpoint.saver.Saver` writes what the library's `AsyncPostgresSaver` writes: the
same checkpoint, channel values and pending writes read back, on the embedded PostgreSQL 18
and on the machine's PostgreSQL 15."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import (
    ERROR,
    INTERRUPT,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    empty_checkpoint,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg_pool import AsyncConnectionPool

from app.checkpoint.saver import NEW_THREAD, UNFLUSHED_WRITES, Saver, setup_saver
from app.pg import open_pool


@contextlib.asynccontextmanager
async def _saver_on(
    url: str, max_size: int = 2
) -> AsyncIterator[tuple[Saver, AsyncConnectionPool[Any]]]:
    """A set-up saver on a pool of its own, closed on leaving."""
    pool = await open_pool(url, max_size=max_size)
    try:
        saver = Saver(pool)
        await setup_saver(saver, pool)
        yield saver, pool
    finally:
        await pool.close()


def _checkpoint(values: dict[str, Any], versions: dict[str, str]) -> Checkpoint:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = versions
    return checkpoint


def _config(thread_id: str, checkpoint_id: str | None = None) -> Any:
    configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def _write(saver: AsyncPostgresSaver, thread_id: str) -> CheckpointTuple:
    """Two checkpoints of one thread, the second with writes of two tasks, read back."""
    metadata: CheckpointMetadata = {"source": "loop", "step": 0, "parents": {}}
    first = _checkpoint(
        {"request": "What is A?", "plan": {"steps": [{"id": "s1"}]}, "count": 3, "empty": None},
        {"request": "1", "plan": "1", "count": "1", "empty": "1"},
    )
    config = await saver.aput(_config(thread_id), first, metadata, first["channel_versions"])
    second = _checkpoint(
        {"request": "What is A?", "plan": {"steps": [{"id": "s1"}, {"id": "s2"}]}, "count": 4},
        {"request": "1", "plan": "2", "count": "2"},
    )
    config = await saver.aput(config, second, {**metadata, "step": 1}, {"plan": "2", "count": "2"})
    # An ordinary task's writes, one channel written twice (both kept, at their indexes)...
    await saver.aput_writes(
        config, [("results", {"s1": "done"}), ("usage", [1]), ("usage", [2])], "task-a"
    )
    # ...written again (a retry): the first writes stay.
    await saver.aput_writes(config, [("results", {"s1": "again"})], "task-a")
    # A special write replaces the earlier one at its index, within a call and across calls.
    await saver.aput_writes(config, [(ERROR, "first"), (ERROR, "second")], "task-b")
    await saver.aput_writes(config, [(ERROR, "third")], "task-b")
    await saver.aput_writes(config, [(INTERRUPT, ["ask"])], "task-b")
    found = await saver.aget_tuple(config)
    assert found is not None
    return found


def _comparable(found: CheckpointTuple) -> dict[str, Any]:
    checkpoint = {k: v for k, v in found.checkpoint.items() if k not in ("id", "ts")}
    return {
        "checkpoint": checkpoint,
        "metadata": found.metadata,
        "writes": sorted(
            (task, channel, repr(value)) for task, channel, value in found.pending_writes or []
        ),
        "has_parent": found.parent_config is not None,
    }


@pytest.mark.parametrize("database", ["embedded_url", "pg15_url"])
async def test_saver_reads_back_as_the_library_writes(
    database: str, request: pytest.FixtureRequest
) -> None:
    async with _saver_on(request.getfixturevalue(database), max_size=4) as (ours, pool):
        mine = await _write(ours, f"saver-{uuid.uuid4().hex}")
        theirs = await _write(AsyncPostgresSaver(pool), f"library-{uuid.uuid4().hex}")
    assert _comparable(mine) == _comparable(theirs)
    assert mine.checkpoint["channel_values"]["plan"] == {"steps": [{"id": "s1"}, {"id": "s2"}]}
    assert mine.checkpoint["channel_values"]["count"] == 4
    writes = sorted((t, c, v) for t, c, v in mine.pending_writes or [])
    assert ("task-a", "results", {"s1": "done"}) in writes
    assert ("task-b", ERROR, "third") in writes


async def test_saver_writes_concurrently_on_its_pool(embedded_url: str) -> None:
    """Many threads' checkpoints at once on one saver: each reads back its own."""
    async with _saver_on(embedded_url, max_size=4) as (saver, _):
        threads = [f"concurrent-{uuid.uuid4().hex}" for _ in range(20)]
        found = await asyncio.gather(*(_write(saver, t) for t in threads))
    for thread_id, tuple_ in zip(threads, found, strict=True):
        assert tuple_.config["configurable"]["thread_id"] == thread_id
        assert tuple_.checkpoint["channel_values"]["count"] == 4
        assert len(tuple_.pending_writes or []) == 5


async def test_a_run_on_a_thread_it_named_reads_no_checkpoint(embedded_url: str) -> None:
    """`NEW_THREAD` in the config: the saver answers "no checkpoint" without asking
    Postgres, even where one exists; an addressed checkpoint is still read."""
    async with _saver_on(embedded_url) as (saver, _):
        thread_id = f"new-{uuid.uuid4().hex}"
        stored = await _write(saver, thread_id)
        marked = _config(thread_id)
        marked["configurable"][NEW_THREAD] = True
        assert await saver.aget_tuple(marked) is None
        assert await saver.aget_tuple(_config(thread_id)) is not None
        addressed = {"configurable": {**stored.config["configurable"], NEW_THREAD: True}}
        assert await saver.aget_tuple(addressed) is not None


async def test_writes_of_one_step_are_committed_with_its_checkpoint(embedded_url: str) -> None:
    """Two tasks' writes and the next checkpoint go as one batch. A write Postgres refuses
    fails its own caller only: the batch is sent again one write at a time."""
    async with _saver_on(embedded_url) as (saver, _):
        thread_id = f"batch-{uuid.uuid4().hex}"
        metadata: CheckpointMetadata = {"source": "loop", "step": 0, "parents": {}}
        first = _checkpoint({"count": 1}, {"count": "1"})
        config = await saver.aput(_config(thread_id), first, metadata, {"count": "1"})
        second = _checkpoint({"count": 2}, {"count": "2"})
        outcomes = await asyncio.gather(
            saver.aput_writes(config, [("count", 2)], "task-a"),
            # Text cannot hold a NUL byte: this write is refused.
            saver.aput_writes(config, [("bad\x00channel", 1)], "task-b"),
            saver.aput(config, second, {**metadata, "step": 1}, {"count": "2"}),
            return_exceptions=True,
        )
        assert outcomes[0] is None
        assert isinstance(outcomes[1], Exception)
        assert "NUL" in str(outcomes[1])
        latest = await saver.aget_tuple(_config(thread_id))
        parent = await saver.aget_tuple(config)
    assert latest is not None
    assert latest.checkpoint["channel_values"]["count"] == 2
    assert parent is not None
    assert [(t, c, v) for t, c, v in parent.pending_writes or []] == [("task-a", "count", 2)]


async def _until_a_write_waits_for_the_lock(url: str) -> None:
    """Return once Postgres shows a session waiting for a lock on a checkpoint table."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(300):
            cursor = await conn.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation IN "
                "('checkpoints'::regclass, 'checkpoint_writes'::regclass)"
            )
            row = await cursor.fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("no write ever waited for the lock")


async def test_a_run_that_flushes_is_not_held_up_by_its_commits(embedded_url: str) -> None:
    """With `UNFLUSHED_WRITES`, a write returns before it is committed, in order with the
    thread's other writes, and `flush` waits for all of them and raises what one raised.
    Without it, a write returns once committed."""
    async with _saver_on(embedded_url, max_size=4) as (saver, pool):
        thread_id = f"unflushed-{uuid.uuid4().hex}"
        metadata: CheckpointMetadata = {"source": "loop", "step": 0, "parents": {}}
        marked = _config(thread_id)
        marked["configurable"][UNFLUSHED_WRITES] = True
        async with pool.connection() as blocker, blocker.transaction():
            # Every write to the checkpoint tables now waits for this transaction.
            await blocker.execute("LOCK TABLE checkpoints, checkpoint_writes IN EXCLUSIVE MODE")
            first = _checkpoint({"count": 1}, {"count": "1"})
            config = await asyncio.wait_for(
                saver.aput(marked, first, metadata, {"count": "1"}), timeout=5
            )
            config["configurable"][UNFLUSHED_WRITES] = True
            await asyncio.wait_for(saver.aput_writes(config, [("count", 2)], "task-a"), 5)
            second = _checkpoint({"count": 2}, {"count": "2"})
            await asyncio.wait_for(
                saver.aput(config, second, {**metadata, "step": 1}, {"count": "2"}), 5
            )
            unmarked = asyncio.create_task(
                saver.aput(_config(f"waits-{uuid.uuid4().hex}"), first, metadata, {"count": "1"})
            )
            flushing = asyncio.create_task(saver.flush(thread_id))
            await _until_a_write_waits_for_the_lock(embedded_url)
            assert not flushing.done()
            assert not unmarked.done()
        await asyncio.wait_for(flushing, timeout=10)
        await asyncio.wait_for(unmarked, timeout=10)
        latest = await saver.aget_tuple(_config(thread_id))
        parent = await saver.aget_tuple(config)

        refused = _config(thread_id)
        refused["configurable"].update(checkpoint_id=latest.checkpoint["id"] if latest else "")
        refused["configurable"][UNFLUSHED_WRITES] = True
        # Text cannot hold a NUL byte: this write is refused, at the flush.
        await saver.aput_writes(refused, [("bad\x00channel", 1)], "task-b")
        with pytest.raises(Exception, match="NUL"):
            await saver.flush(thread_id)
        await saver.flush(thread_id)  # nothing left to wait for
    assert latest is not None
    assert latest.checkpoint["channel_values"]["count"] == 2
    assert parent is not None
    assert [(t, c, v) for t, c, v in parent.pending_writes or []] == [("task-a", "count", 2)]


@pytest.mark.parametrize("database", ["embedded_url", "pg15_url"])
async def test_each_table_is_found_by_thread_through_its_primary_key(
    database: str, request: pytest.FixtureRequest
) -> None:
    """Set-up leaves no second index on `thread_id` (a stored row writes one index entry
    fewer per table), twice in a row, and lookups by thread still use an index."""
    tables = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
    async with _saver_on(request.getfixturevalue(database)) as (saver, pool):
        await setup_saver(saver, pool)
        thread_id = f"indexed-{uuid.uuid4().hex}"
        await _write(saver, thread_id)
        async with pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = ANY(%s)", (list(tables),)
            )
            indexes = {row["indexname"] for row in await cursor.fetchall()}
            await conn.execute("SET LOCAL enable_seqscan = off")
            plans = {}
            for table in tables:
                cursor = await conn.execute(
                    f"EXPLAIN SELECT * FROM {table} WHERE thread_id = %s", (thread_id,)
                )
                plans[table] = " ".join(row["QUERY PLAN"] for row in await cursor.fetchall())
        await saver.adelete_thread(thread_id)
        assert await saver.aget_tuple(_config(thread_id)) is None
    assert not {f"{table}_thread_id_idx" for table in tables} & indexes
    for table in tables:
        assert f"{table}_pkey" in plans[table], plans[table]
