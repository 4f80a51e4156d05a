"""One run per thread across processes: a Postgres advisory lock keyed by the thread id.

Every surface that runs a thread (the server's runs, the CLI's `ask` and `resume`) holds the
thread's session-level advisory lock on a connection of its own for as long as the graph runs,
so two processes never run one thread at once, and anyone can tell whether a thread that has
steps left is being run right now or was cut off (a stop, a crash) and can be continued.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app.errors import DatabaseError, ThreadBusyError
from app.pg import redact
from graphs.multitask import StopRequest, send_stop

BUSY = "is running: wait for its run to end"
"""Why a thread that another run holds cannot be run."""


async def try_lock_thread(conn: AsyncConnection[Any], thread_id: str) -> bool:
    """Take the thread's lock on `conn` (a dict-row connection) if nobody holds it.

    Returns:
        Whether the lock was taken.
    """
    cursor = await conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS got", (thread_id,)
    )
    row = await cursor.fetchone()
    return bool(row and row["got"])


async def wait_lock_thread(conn: AsyncConnection[Any], thread_id: str, wait_s: float) -> bool:
    """Take the thread's lock on `conn`, waiting up to `wait_s` for whoever holds it (in the
    order they came, as Postgres queues lock waiters).

    Returns:
        Whether the lock was taken in time.
    """
    await conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(wait_s * 1000)}ms",))
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (thread_id,))
        return True
    except psycopg.errors.LockNotAvailable:
        return False
    finally:
        await conn.execute("RESET lock_timeout")


async def _take(conn: AsyncConnection[Any], thread_id: str, wait_s: float | None) -> None:
    """Take the thread's lock on `conn`: at once, or waiting up to `wait_s`.

    Raises:
        ThreadBusyError: another run holds it (still, after `wait_s`).
    """
    if wait_s is None:
        got = await try_lock_thread(conn, thread_id)
    else:
        got = await wait_lock_thread(conn, thread_id, wait_s)
    if not got:
        why = BUSY if wait_s is None else f"is still running after {wait_s:.0f} s of waiting"
        raise ThreadBusyError(thread_id, why)


@asynccontextmanager
async def locked_on(conn: AsyncConnection[Any], thread_id: str) -> AsyncIterator[None]:
    """Hold the thread's lock on `conn` for the block (given back at its end), taken at once.

    Raises:
        ThreadBusyError: a run holds the thread.
    """
    await _take(conn, thread_id, None)
    try:
        yield
    finally:
        await unlock_threads(conn)


async def try_key_slot(conn: AsyncConnection[Any], key_id: str, slots: int) -> bool:
    """Take one of a key's `slots` run slots on `conn`, if one is free: a session advisory
    lock (in the two-key space, apart from thread locks) that every server on the database
    sees, and that a crashed process's session gives back.

    Returns:
        Whether a slot was taken (`unlock_threads` gives it back).
    """
    for slot in range(slots):  # one at a time: never more than one slot taken
        cursor = await conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s), %s) AS got", (key_id, slot)
        )
        row = await cursor.fetchone()
        if row and row["got"]:
            return True
    return False


async def unlock_threads(conn: AsyncConnection[Any]) -> None:
    """Release every thread lock `conn` holds."""
    await conn.execute("SELECT pg_advisory_unlock_all()")


async def _release_or_close(conn: AsyncConnection[Any]) -> None:
    try:
        await unlock_threads(conn)
    except (psycopg.Error, asyncio.CancelledError):
        await conn.close()


async def locked_threads(conn: AsyncConnection[Any], thread_ids: list[str]) -> set[str]:
    """Return which of `thread_ids` some session on this database holds the lock of."""
    if not thread_ids:
        return set()
    # pg_locks shows a bigint advisory key as its high half in classid, its low half in
    # objid, with objsubid 1.
    cursor = await conn.execute(
        """
        SELECT t.id AS thread_id FROM unnest(%s::text[]) AS t(id)
        CROSS JOIN LATERAL (SELECT hashtextextended(t.id, 0) AS k) AS key
        WHERE EXISTS (
            SELECT 1 FROM pg_locks l
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = ((key.k >> 32) & 4294967295)::oid
              AND l.objid = (key.k & 4294967295)::oid
        )
        """,
        (thread_ids,),
    )
    return {str(row["thread_id"]) for row in await cursor.fetchall()}


@asynccontextmanager
async def holding_thread(
    url: str, thread_id: str, *, wait_s: float | None = None
) -> AsyncIterator[None]:
    """Hold the thread's lock, on a connection of its own, for the length of the block;
    with `wait_s`, wait that long for another holder to let go.

    Raises:
        ThreadBusyError: another run (in any process) holds the thread.
        DatabaseError: the database cannot be reached.
    """
    try:
        conn = await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot reach Postgres at {redact(url)}: {exc}") from exc
    async with conn:  # closing the session releases its lock
        await _take(conn, thread_id, wait_s)
        yield


class ThreadLocks(Protocol):
    """Where a process takes its thread locks from."""

    def holding(
        self, thread_id: str, *, wait_s: float | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Hold the thread's lock for the length of the block; with `wait_s`, wait up to
        that long for another run to let go of it.

        Raises:
            ThreadBusyError: another run (in any process) holds the thread.
            DatabaseError: no connection to hold it on.
        """
        ...

    async def send_stop(self, request: StopRequest) -> None:
        """Ask the run that holds a thread, on any server, to stop (`graphs.multitask`)."""
        ...

    async def held(self, thread_id: str) -> bool:
        """Whether some session (of any process) holds the thread's lock now."""
        ...


class OwnConnectionLocks:
    """Each lock on a connection of its own, opened for it: for a process with few runs."""

    def __init__(self, url: str) -> None:
        self.url = url

    def holding(
        self, thread_id: str, *, wait_s: float | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Hold the thread's lock on a new connection (see `ThreadLocks`)."""
        return holding_thread(self.url, thread_id, wait_s=wait_s)

    async def send_stop(self, request: StopRequest) -> None:
        """Send a stop request on a new connection (see `ThreadLocks`)."""
        try:
            conn = await AsyncConnection.connect(self.url, autocommit=True, row_factory=dict_row)
        except psycopg.OperationalError as exc:
            raise DatabaseError(f"cannot reach Postgres at {redact(self.url)}: {exc}") from exc
        async with conn:
            await send_stop(conn, request)

    async def held(self, thread_id: str) -> bool:
        """Whether the thread's lock is held (see `ThreadLocks`), asked on a new connection.

        Raises:
            DatabaseError: the database cannot be reached.
        """
        try:
            conn = await AsyncConnection.connect(self.url, autocommit=True, row_factory=dict_row)
        except psycopg.OperationalError as exc:
            raise DatabaseError(f"cannot reach Postgres at {redact(self.url)}: {exc}") from exc
        async with conn:
            return thread_id in await locked_threads(conn, [thread_id])


class PooledLocks:
    """Locks on the connections of a pool (autocommit, dict rows) kept for them: one per run
    in flight, so the pool's size is how many runs a process holds at once."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, wait_s: float) -> None:
        self.pool = pool
        self.wait_s = wait_s

    @asynccontextmanager
    async def holding(self, thread_id: str, *, wait_s: float | None = None) -> AsyncIterator[None]:
        """Hold the thread's lock on a pooled connection (see `ThreadLocks`), waiting up to
        the pool's `wait_s` for a connection when every one holds a run."""
        try:
            conn: AsyncConnection[Any] = await self.pool.getconn(timeout=self.wait_s)
        except PoolTimeout:
            raise DatabaseError(
                f"{self.pool.max_size} runs are in flight, the most this process takes: retry later"
            ) from None
        try:
            try:
                await _take(conn, thread_id, wait_s)
            except BaseException:
                # A wait cancelled as the lock was granted must not leave it on a pooled
                # connection: give it back, or close the connection (which gives it back).
                await _release_or_close(conn)
                raise
            try:
                yield
            finally:
                await unlock_threads(conn)
        finally:
            await self.pool.putconn(conn)

    async def send_stop(self, request: StopRequest) -> None:
        """Send a stop request on a pooled connection (see `ThreadLocks`)."""
        try:
            async with self.pool.connection(timeout=self.wait_s) as conn:
                await send_stop(conn, request)
        except PoolTimeout:
            raise DatabaseError(
                f"{self.pool.max_size} runs are in flight, the most this process takes: retry later"
            ) from None

    async def held(self, thread_id: str) -> bool:
        """Whether the thread's lock is held (see `ThreadLocks`), asked on a pooled
        connection.

        Raises:
            DatabaseError: every connection holds a run for `wait_s`.
        """
        try:
            async with self.pool.connection(timeout=self.wait_s) as conn:
                return thread_id in await locked_threads(conn, [thread_id])
        except PoolTimeout:
            raise DatabaseError(
                f"{self.pool.max_size} runs are in flight, the most this process takes: retry later"
            ) from None
