"""`GroupCommit`: the writes of one thread go in batches, in order, the batches of many threads
in one transaction, each caller learning its own outcome."""

import asyncio
from collections.abc import Sequence

import pytest

from app.checkpoint.batching import GroupCommit, Statement


class Database:
    """Records each committed batch; `hold` keeps the next commit open until released."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.hold: asyncio.Event | None = None
        self.failing: set[bytes] = set()

    async def execute(self, statements: Sequence[Statement]) -> None:
        if self.hold is not None:
            hold, self.hold = self.hold, None
            await hold.wait()
        if self.failing & {sql for sql, _ in statements}:
            raise RuntimeError("bad statement")
        self.batches.append([sql for sql, _ in statements])


def _statement(name: str) -> Statement:
    return (name.encode(), ())


async def settle() -> None:
    """Let every task that can run go as far as it can: the fake database never sleeps, and
    the delays these tests set (10 s) never come due, so what is left waits on a hold."""
    for _ in range(20):
        await asyncio.sleep(0)


async def _first_held(
    db: Database, commits: GroupCommit
) -> tuple[asyncio.Task[None], asyncio.Event]:
    """Start thread t1's write "first", whose commit stays open until the event is set."""
    db.hold = hold = asyncio.Event()
    first = asyncio.create_task(commits.store("t1", _statement("first")))
    await settle()
    return first, hold


async def test_writes_queued_during_a_commit_go_together_in_order() -> None:
    db = Database()
    commits = GroupCommit(db.execute, defer_s=10)
    first, hold = await _first_held(db, commits)
    later = [
        asyncio.create_task(commits.store("t1", _statement("writes-a"), deferrable=True)),
        asyncio.create_task(commits.store("t1", _statement("writes-b"), deferrable=True)),
        asyncio.create_task(commits.store("t1", _statement("checkpoint-2"))),
    ]
    await settle()
    assert not any(t.done() for t in [first, *later])
    hold.set()
    await asyncio.gather(first, *later)
    assert db.batches == [[b"first"], [b"writes-a", b"writes-b", b"checkpoint-2"]]


async def test_a_deferrable_write_waits_for_the_checkpoint_after_it() -> None:
    db = Database()
    commits = GroupCommit(db.execute, defer_s=10)
    writes = asyncio.create_task(commits.store("t1", _statement("writes"), deferrable=True))
    await settle()
    assert db.batches == []
    assert not writes.done()
    await commits.store("t1", _statement("checkpoint"))
    await writes
    assert db.batches == [[b"writes", b"checkpoint"]]


async def test_a_deferrable_write_alone_is_committed_after_the_delay() -> None:
    db = Database()
    commits = GroupCommit(db.execute, defer_s=0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await commits.store("t1", _statement("interrupt"), deferrable=True)
    assert loop.time() - started >= 0.015
    assert db.batches == [[b"interrupt"]]


async def test_threads_ready_during_a_commit_go_together_in_the_next_one() -> None:
    db = Database()
    commits = GroupCommit(db.execute, defer_s=10, stall_s=10)
    first, hold = await _first_held(db, commits)
    others = [
        asyncio.create_task(commits.store("t2", _statement("t2-checkpoint"))),
        asyncio.create_task(commits.store("t3", _statement("t3-checkpoint"))),
        asyncio.create_task(commits.store("t1", _statement("t1-checkpoint"))),
    ]
    await settle()
    assert not any(t.done() for t in others)
    hold.set()
    await asyncio.gather(first, *others)
    assert db.batches == [
        [b"first"],
        [b"t2-checkpoint", b"t3-checkpoint", b"t1-checkpoint"],
    ]


async def test_a_stalled_commit_does_not_hold_up_other_threads() -> None:
    db = Database()
    commits = GroupCommit(db.execute, defer_s=10, stall_s=0.02)
    loop = asyncio.get_running_loop()
    blocked, hold = await _first_held(db, commits)
    started = loop.time()
    await asyncio.wait_for(commits.store("t2", _statement("t2-checkpoint")), timeout=1)
    assert loop.time() - started >= 0.015
    assert db.batches == [[b"t2-checkpoint"]]
    assert not blocked.done()
    hold.set()
    await blocked
    assert db.batches == [[b"t2-checkpoint"], [b"first"]]


async def test_a_refused_write_fails_only_its_own_thread() -> None:
    db = Database()
    db.failing = {b"bad"}
    commits = GroupCommit(db.execute, defer_s=10, stall_s=10)
    first, hold = await _first_held(db, commits)
    bad = asyncio.create_task(commits.store("t2", _statement("bad")))
    good = asyncio.create_task(commits.store("t3", _statement("good")))
    await settle()
    hold.set()
    await asyncio.gather(first, good)
    with pytest.raises(RuntimeError, match="bad statement"):
        await bad
    assert db.batches == [[b"first"], [b"good"]]


async def test_a_failed_batch_is_sent_again_one_by_one() -> None:
    db = Database()
    db.failing = {b"bad"}
    commits = GroupCommit(db.execute, defer_s=10)
    first, hold = await _first_held(db, commits)
    good = asyncio.create_task(commits.store("t1", _statement("good")))
    bad = asyncio.create_task(commits.store("t1", _statement("bad")))
    after = asyncio.create_task(commits.store("t1", _statement("after")))
    await settle()
    hold.set()
    await first
    await good
    with pytest.raises(RuntimeError, match="bad statement"):
        await bad
    await after
    assert db.batches == [[b"first"], [b"good"], [b"after"]]


async def test_a_cancelled_caller_does_not_lose_its_write_or_others() -> None:
    db = Database()
    commits = GroupCommit(db.execute, defer_s=10)
    first, hold = await _first_held(db, commits)
    gone = asyncio.create_task(commits.store("t1", _statement("gone")))
    kept = asyncio.create_task(commits.store("t1", _statement("kept")))
    await settle()
    gone.cancel()
    hold.set()
    await asyncio.gather(first, kept)
    assert gone.cancelled()
    assert db.batches == [[b"first"], [b"gone", b"kept"]]
