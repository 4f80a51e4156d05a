"""Group commit: the writes of many threads, committed together.

A run writes a checkpoint after every super-step and the writes of every task, and LangGraph
does not wait for either before it goes on (`durability="async"`). A task's writes are
followed, as soon as its super-step ends, by the step's checkpoint. `GroupCommit` sends what a
thread has queued as one batch, in the order it came, and lets each caller return once its
own write is committed, as if it had been sent alone.

One transaction is under way at a time: the batches of every thread that became ready
meanwhile go together in the next one (one round trip, one commit). So the busier the
server, the more each transaction carries, and the fewer of them there are: at ten
concurrent runs, about two per run instead of ten. A transaction that takes longer than
`stall_s` does not hold the others up: the next one starts beside it.

Writes marked `deferrable` (a task's writes) wait up to `defer_s` for the checkpoint that
follows them; a checkpoint never waits. So a crash may lose a task's writes of the last
`defer_s` that a checkpoint did not yet follow: the task runs again on resume, as it would
after a crash a moment earlier.

If a transaction fails, its writes are sent again one by one, so each caller gets its own
outcome. The statements must therefore be idempotent (the saver's are upserts): a
transaction may fail after part of it was stored.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Statement = tuple[bytes, Sequence[Any]]
"""A statement and its parameters."""
Execute = Callable[[Sequence[Statement]], Awaitable[None]]
"""Commit statements together: one round trip, one transaction."""

DEFER_S = 0.005
"""How long a deferrable write waits for a write it can go with."""
STALL_S = 0.05
"""How long a transaction may be under way before the next one starts beside it."""
MAX_IN_FLIGHT = 4
"""Transactions under way at once, at most (each on its own connection)."""


@dataclass(frozen=True)
class _Write:
    statement: Statement
    deferrable: bool
    stored: asyncio.Future[None]


@dataclass
class _Thread:
    queued: list[_Write] = field(default_factory=list)
    sending: bool = False
    timer: asyncio.TimerHandle | None = None


_Batch = tuple[str, _Thread, list[_Write]]


class GroupCommit:
    """Commits the writes of each key (a thread id) in order, one batch of a key at a time,
    and the batches of many keys in one transaction."""

    def __init__(
        self,
        execute: Execute,
        *,
        defer_s: float = DEFER_S,
        stall_s: float = STALL_S,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._execute = execute
        self._defer_s = defer_s
        self._stall_s = stall_s
        self._max_in_flight = max_in_flight
        self._threads: dict[str, _Thread] = {}
        self._ready: list[_Batch] = []
        """Batches waiting for the transaction under way to end."""
        self._in_flight = 0
        self._last_start = 0.0
        self._stall_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def enqueue(
        self, key: str, statement: Statement, *, deferrable: bool = False
    ) -> asyncio.Future[None]:
        """Queue `statement` to be committed with the other writes of `key` that are ready.

        Returns:
            A future that ends when the statement is committed, or fails with what
            committing it raised.
        """
        thread = self._threads.setdefault(key, _Thread())
        write = _Write(statement, deferrable, asyncio.get_running_loop().create_future())
        thread.queued.append(write)
        self._schedule(key, thread)
        return write.stored

    async def store(self, key: str, statement: Statement, *, deferrable: bool = False) -> None:
        """Commit `statement` with the other writes of `key` that are ready; return when it
        is committed, or raise what committing it raised."""
        await self.enqueue(key, statement, deferrable=deferrable)

    def _schedule(self, key: str, thread: _Thread) -> None:
        if thread.sending or not thread.queued:
            return
        if all(w.deferrable for w in thread.queued):
            if thread.timer is None:
                loop = asyncio.get_running_loop()
                thread.timer = loop.call_later(self._defer_s, self._flush, key)
            return
        self._flush(key)

    def _flush(self, key: str) -> None:
        thread = self._threads.get(key)
        if thread is None:
            return
        if thread.timer is not None:
            thread.timer.cancel()
            thread.timer = None
        if thread.sending or not thread.queued:
            return
        batch, thread.queued = thread.queued, []
        thread.sending = True
        self._ready.append((key, thread, batch))
        self._pump()

    def _pump(self) -> None:
        """Start a transaction with every ready batch, unless one is under way (and has not
        stalled)."""
        if not self._ready or self._in_flight >= self._max_in_flight:
            return
        loop = asyncio.get_running_loop()
        if self._in_flight:
            wait = self._last_start + self._stall_s - loop.time()
            if wait > 0:
                if self._stall_timer is None:
                    self._stall_timer = loop.call_later(wait, self._stalled)
                return
        group, self._ready = self._ready, []
        self._in_flight += 1
        self._last_start = loop.time()
        task = asyncio.create_task(self._send(group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _stalled(self) -> None:
        self._stall_timer = None
        self._pump()

    async def _send(self, group: list[_Batch]) -> None:
        try:
            try:
                await self._commit([write for _, _, batch in group for write in batch])
            except asyncio.CancelledError:
                # The loop is closing: whoever still waits for these writes stops waiting.
                for _, thread, batch in group:
                    for write in batch + thread.queued:
                        write.stored.cancel()
                    thread.queued = []
                raise
            finally:
                for key, thread, _ in group:
                    thread.sending = False
                    if not thread.queued and thread.timer is None:
                        self._threads.pop(key, None)
            # Every thread's next batch joins the ready ones before the next transaction.
            for key, thread, _ in group:
                self._schedule(key, thread)
        finally:
            self._in_flight -= 1
        self._pump()

    async def _commit(self, batch: list[_Write]) -> None:
        try:
            await self._execute([w.statement for w in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].stored, exc)
                return
            # Alone, each write succeeds or fails on its own.
            for write in batch:
                try:
                    await self._execute([write.statement])
                except Exception as error:
                    _settle(write.stored, error)
                else:
                    _settle(write.stored, None)
        else:
            for write in batch:
                _settle(write.stored, None)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
