"""Group commit: the writes of one thread, committed together.

A run writes a checkpoint after every super-step and the writes of every task, and LangGraph
does not wait for either before it goes on (`durability="async"`). A task's writes are
followed, as soon as its super-step ends, by the step's checkpoint; while one commit of a
thread is under way, its next writes queue up. `GroupCommit` sends what a thread has queued
as one batch (one round trip, one transaction), in the order it came, and lets each caller
return once its own write is committed, as if it had been sent alone.

Writes marked `deferrable` (a task's writes) wait up to `defer_s` for the checkpoint that
follows them; a checkpoint never waits. So a crash may lose a task's writes of the last
`defer_s` that a checkpoint did not yet follow: the task runs again on resume, as it would
after a crash a moment earlier.

If a batch fails, its writes are sent again one by one, so each caller gets its own
outcome. The statements must therefore be idempotent (the saver's are upserts): a batch may
fail after part of it was stored.
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


class GroupCommit:
    """Commits the writes of each key (a thread id) in batches, one batch at a time."""

    def __init__(self, execute: Execute, *, defer_s: float = DEFER_S) -> None:
        self._execute = execute
        self._defer_s = defer_s
        self._threads: dict[str, _Thread] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def store(self, key: str, statement: Statement, *, deferrable: bool = False) -> None:
        """Commit `statement` with the other writes of `key` that are ready; return when it
        is committed, or raise what committing it raised."""
        thread = self._threads.setdefault(key, _Thread())
        write = _Write(statement, deferrable, asyncio.get_running_loop().create_future())
        thread.queued.append(write)
        self._schedule(key, thread)
        await write.stored

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
        task = asyncio.create_task(self._send(key, thread, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, key: str, thread: _Thread, batch: list[_Write]) -> None:
        try:
            await self._commit(batch)
        except asyncio.CancelledError:
            # The loop is closing: whoever still waits for this key's writes stops waiting.
            for write in batch + thread.queued:
                write.stored.cancel()
            thread.queued = []
            raise
        finally:
            thread.sending = False
            if not thread.queued and thread.timer is None:
                self._threads.pop(key, None)
        self._schedule(key, thread)

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
