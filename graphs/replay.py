"""Replay a thread: its runs' events again, in order and at their pace, calling no model.

A run's events come from its record (`graphs.run_records`): plan updates, handoffs, token
deltas, step results, interrupts, the final event, each at its offset from the run's start.
The runs of a thread play one after another; the time between them (a person deciding, a
day passing) is not played, and no pause within a run lasts more than `MAX_PAUSE_S` (a slow
model's silence shows as a short wait, not a long one). A thread whose runs were never
recorded (stored before records were kept, or cut off by a crash) is told from its
checkpoints: its plan versions, its step results, its pending approval and its answer,
without deltas or timing.
"""

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from graphs.agent import AgentGraph
from graphs.run_records import RunEvent, Timeline, read_records
from graphs.threads import ThreadView, view_thread

Sleep = Callable[[float], Awaitable[None]]

MIN_SPEED = 0.1
"""The slowest replay (ten times slower than it happened); 0 means at once."""
MAX_PAUSE_S = 10.0
"""The longest wait between two events of a replay, whatever the speed."""


def check_speed(speed: float) -> None:
    """Raises:
    ValueError: a speed that is neither 0 (at once) nor `MIN_SPEED` or more."""
    if speed != 0 and not speed >= MIN_SPEED:
        raise ValueError(f"the speed of a replay is 0 (at once) or from {MIN_SPEED} up")


def timeline_of_view(view: ThreadView) -> Timeline:
    """Tell a thread from its latest checkpoint, as its events would have: every plan
    version, every step result, then its pending approval or its final answer."""
    events: list[RunEvent] = [{"event": "plan_update", **rev} for rev in view["plan_history"]]
    events += [{"event": "step_result", "result": result} for result in view["results"]]
    if view["pending_approval"] is not None:
        events.append(
            {
                "event": "interrupt",
                "thread_id": view["thread_id"],
                "payload": view["pending_approval"],
            }
        )
    elif view["answer"] is not None:
        events.append(
            {
                "event": "final",
                "status": view["status"],
                "answer": view["answer"],
                "citations": view["citations"],
                "report": view["report"],
            }
        )
    return [(0.0, event) for event in events]


async def paced(
    timeline: Timeline,
    *,
    speed: float,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[RunEvent]:
    """Yield a run's events at their offsets divided by `speed` (1: as they happened, 10:
    ten times faster, 0: at once), no gap longer than `MAX_PAUSE_S`."""
    due = clock()
    previous_ms = 0.0
    for offset_ms, event in timeline:
        if speed > 0:
            due += min(max(offset_ms - previous_ms, 0.0) / 1000 / speed, MAX_PAUSE_S)
            previous_ms = offset_ms
            wait = due - clock()
            if wait > 0:
                await sleep(wait)
        yield event


async def replay(
    graph: AgentGraph,
    pool: AsyncConnectionPool[Any],
    thread_id: str,
    *,
    speed: float = 1.0,
    sleep: Sleep = asyncio.sleep,
) -> AsyncGenerator[RunEvent, None]:
    """Yield a thread's events again (see the module); `speed` as for `paced`.

    Raises:
        ThreadNotFoundError: the thread has no checkpoint.
        ValueError: a speed that `check_speed` refuses.
    """
    check_speed(speed)
    view = await view_thread(graph, thread_id)  # an unknown thread raises here
    runs = await read_records(pool, thread_id)
    timelines = [run.timeline for run in runs] or [timeline_of_view(view)]
    for timeline in timelines:
        async for event in paced(timeline, speed=speed, sleep=sleep):
            yield event
