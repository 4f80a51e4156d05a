"""Double-texting: what a new run on a thread that a run holds does (`multitask_strategy`).

- `reject` (the default): refused with 409, the thread is busy.
- `enqueue`: waits for the current run to end, then runs.
- `interrupt`: asks the current run to stop at its next super-step, keeping what it
  finished (the thread reads as cut off), then runs.
- `rollback`: asks the same, and the stopped run discards every checkpoint it wrote, so the
  thread is as it was before that run started; then the new one runs.

A stop request is a Postgres `NOTIFY` on `STOP_CHANNEL`, which every server listens to
(`listen_for_stops`), so the current run is stopped on whichever server runs it. A run of the
CLI does not listen: it is waited for, as with `enqueue`. Whoever waits, waits at most
`WAIT_S` for the thread, then is refused as busy.
"""

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import psycopg
from psycopg import AsyncConnection

from app.pg import redact

logger = logging.getLogger(__name__)

Strategy = Literal["reject", "enqueue", "interrupt", "rollback"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
StopMode = Literal["interrupt", "rollback"]
STOP_CHANNEL = "agentgraph_run_stops"
WAIT_S = 600.0
"""How long a run that does not reject waits for the thread's current run to end."""
RECONNECT_S = 1.0


@dataclass(frozen=True)
class StopRequest:
    """Ask the run that holds `thread_id` to stop; `request_id` names the run that asks, so
    that it never stops itself when the request reaches it late."""

    thread_id: str
    mode: StopMode
    request_id: str

    def payload(self) -> str:
        return json.dumps(
            {"thread_id": self.thread_id, "mode": self.mode, "request_id": self.request_id}
        )

    @classmethod
    def parse(cls, payload: str) -> "StopRequest | None":
        """The request a notification carries; None for one that is not a stop request."""
        try:
            data: Any = json.loads(payload)
            mode = data["mode"]
            if mode not in ("interrupt", "rollback"):
                return None
            return cls(str(data["thread_id"]), mode, str(data["request_id"]))
        except (ValueError, KeyError, TypeError):
            return None


async def send_stop(conn: AsyncConnection[Any], request: StopRequest) -> None:
    """Send a stop request to every listening server (the one that runs the thread acts)."""
    await conn.execute("SELECT pg_notify(%s, %s)", (STOP_CHANNEL, request.payload()))


async def listen_for_stops(url: str, on_stop: Callable[[StopRequest], None]) -> None:
    """Call `on_stop` with every stop request sent on the database, until cancelled; a lost
    connection is opened again."""
    while True:
        try:
            async with await AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {STOP_CHANNEL}")
                async for notification in conn.notifies():
                    request = StopRequest.parse(notification.payload)
                    if request is not None:
                        on_stop(request)
        except psycopg.OperationalError as exc:
            logger.warning(
                "lost the stop requests' connection to %s (%s); listening again", redact(url), exc
            )
            await asyncio.sleep(RECONNECT_S)
