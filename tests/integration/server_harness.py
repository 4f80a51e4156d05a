"""A real uvicorn server on 127.0.0.1 with an ephemeral port, run in a background thread of
the test process (so the scripted fake models registered here are reachable), and reading
its event streams (`SseEvent` and `sse_events` are `bench.common`'s)."""

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from app.settings import Settings
from bench.common import SseEvent as SseEvent  # re-exported: the tests read streams with it
from bench.common import sse_events as sse_events
from server.app import create_app
from server.serve import AgentServer


@dataclass
class RunningServer:
    """A started server and its base URL."""

    server: AgentServer
    thread: threading.Thread
    base_url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the server did not stop"


def start_server(settings: Settings, url: str, **options: Any) -> RunningServer:
    """Start a server on an ephemeral port and wait until it is ready."""
    app = create_app(settings, url=url, **options)
    server = AgentServer(app, host="127.0.0.1", port=0, log_level="warning")
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "the server exited while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(server=server, thread=thread, base_url=f"http://127.0.0.1:{port}")


@contextmanager
def running_server(settings: Settings, url: str, **options: Any) -> Iterator[RunningServer]:
    """Run a server for the length of a `with` block."""
    running = start_server(settings, url, **options)
    try:
        yield running
    finally:
        if running.thread.is_alive():
            running.stop()


RUN_STREAM = "/api/v1/agent/run.stream"


def open_run_stream(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> AbstractAsyncContextManager[httpx.Response]:
    """Start a run and open its event stream (read it with `sse_events`)."""
    return client.stream("POST", RUN_STREAM, json=body)


async def stream_run(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[SseEvent]:
    """POST to an SSE endpoint and return every event until the stream ends."""
    async with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [e async for e in sse_events(response)]


async def wait_for(predicate: Any, *, within_s: float = 120.0) -> None:
    """Poll an async predicate until it holds."""
    deadline = time.monotonic() + within_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
