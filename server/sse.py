"""Server-sent events of a run: `metadata` first, then the graph's events, with keep-alives."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from server.runner import RunHandle

KEEPALIVE_S = 10.0
"""A comment line at least this often keeps proxies from closing an idle stream."""


def format_event(name: str, data: Any) -> str:
    """Return one SSE message."""
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"


async def _events(handle: RunHandle, keepalive_s: float) -> AsyncIterator[str]:
    yield format_event("metadata", {"thread_id": handle.thread_id, "run_id": handle.run_id})
    while True:
        try:
            event = await asyncio.wait_for(handle.queue.get(), keepalive_s)
        except TimeoutError:
            yield ": keep-alive\n\n"
            continue
        if event is None:
            return
        yield format_event(str(event["event"]), event)


def event_stream(handle: RunHandle, *, keepalive_s: float = KEEPALIVE_S) -> StreamingResponse:
    """Stream a run's events. A client that leaves stops the stream, never the run."""
    return StreamingResponse(
        _events(handle, keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
