"""End a server process whose event loop is stuck, so that its process manager starts another.

A blocking call in async code holds up every request of the process. uvicorn's process
manager (`serve --workers`) restarts a worker that dies or stops answering its health check,
but a worker's health check is answered by a thread of its own, which a stuck event loop does
not stop. So each worker watches its own loop: a task marks the time once a second, and a
thread ends the process when the mark is older than the timeout. uvicorn then starts a new
worker; the runs the stuck one held keep every finished step in their checkpoints and can be
continued (`POST /api/v1/threads/{id}/continue`).
"""

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

logger = logging.getLogger(__name__)

BEAT_S = 1.0
"""How often the event loop marks that it runs, and how often the thread looks."""
STUCK_EXIT_CODE = 70
"""The exit status of a process ended by its watchdog (EX_SOFTWARE)."""


@asynccontextmanager
async def loop_watchdog(timeout_s: float) -> AsyncIterator[None]:
    """While the block runs, end the process when its event loop is stuck for `timeout_s`."""
    last_beat = time.monotonic()
    done = threading.Event()

    async def beat() -> None:
        nonlocal last_beat
        while True:
            last_beat = time.monotonic()
            await asyncio.sleep(BEAT_S)

    def watch() -> None:
        while not done.wait(BEAT_S):
            silent = time.monotonic() - last_beat
            if silent > timeout_s:
                logger.error(
                    "the event loop of process %d has been stuck for %.0f s: exiting, so that a "
                    "new worker takes over",
                    os.getpid(),
                    silent,
                )
                logging.shutdown()
                os._exit(STUCK_EXIT_CODE)  # the loop cannot run a clean shutdown

    beating = asyncio.create_task(beat(), name="loop-watchdog-beat")
    watcher = threading.Thread(target=watch, name="loop-watchdog", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        beating.cancel()
