"""Run the app under uvicorn, in one process or several, ending in-flight streams cleanly
when asked to stop."""

import asyncio
import contextlib
import logging
import socket
import sys

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.importer import import_from_string

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 10
APP_FACTORY = "server.app:create_app"
"""What each worker process serves: the app factory, reading its settings from the environment."""
HANDOFF_BATCH = 64
"""Connections a worker takes from the parent per wake-up."""
READY = b"r"
"""What a worker tells the parent (`server.workers`) once its app has started."""
TAKEN = b"t"
"""What a worker tells the parent for each connection it has taken."""
WORKER_TIMEOUT_S = 60.0
"""How long a ready worker may go without a word to the parent before it is killed and
started again."""
ALIVE = b"a"
"""What a worker tells the parent about once a second, from its event loop: a worker whose
loop is stuck stops saying it."""


def _config(app: FastAPI, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )


class AgentServer(uvicorn.Server):
    """uvicorn that first ends every run's stream with an `error` event, then stops.

    It listens on its host and port, or, as a worker of `server.workers.Supervisor`, serves
    the connections its parent hands over on `handoff`.
    """

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        log_level: str = "info",
        handoff: socket.socket | None = None,
    ) -> None:
        super().__init__(_config(app, host=host, port=port, log_level=log_level))
        self.app = app
        self.handoff = handoff
        self._opening: set[asyncio.Task[object]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start the app, then listen, or take connections from the parent."""
        if self.handoff is None:
            await super().startup(sockets)
            return
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        self.servers = []
        self.handoff.setblocking(False)
        asyncio.get_running_loop().add_reader(self.handoff.fileno(), self._take_connections)
        self.started = True
        self.handoff.send(READY)

    def _protocol(self) -> asyncio.Protocol:
        # What uvicorn's own `startup` builds for each connection it accepts.
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )

    def _take_connections(self) -> None:
        assert self.handoff is not None
        loop = asyncio.get_running_loop()
        taken = 0
        for _ in range(HANDOFF_BATCH):
            try:
                message, fds, _, _ = socket.recv_fds(self.handoff, 1, 1)
            except (BlockingIOError, InterruptedError):
                break
            if not message and not fds:
                # The parent is gone: nobody will hand this worker anything any more.
                logger.error("the supervising process closed the connection: stopping")
                loop.remove_reader(self.handoff.fileno())
                self.should_exit = True
                return
            for fd in fds:
                connection = socket.socket(fileno=fd)
                connection.setblocking(False)
                task = loop.create_task(loop.connect_accepted_socket(self._protocol, connection))
                self._opening.add(task)
                task.add_done_callback(self._opened)
                taken += 1
        if taken:
            # The parent deals no more to a worker that has not taken what it was handed.
            with contextlib.suppress(OSError):
                self.handoff.send(TAKEN * taken)

    async def on_tick(self, counter: int) -> bool:
        """Tell the parent, once a second, that this worker's event loop is running."""
        if counter % 10 == 0 and self.handoff is not None and self.handoff.fileno() != -1:
            with contextlib.suppress(OSError):  # full or closed: the parent will know
                self.handoff.send(ALIVE)
        return await super().on_tick(counter)

    def _opened(self, task: "asyncio.Task[object]") -> None:
        self._opening.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.warning("a connection from the parent could not be served: %s", exc)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End every run's stream with an `error` event, then shut down as uvicorn does.

        The runs' checkpoints keep every finished step; any server can resume them later.
        """
        if self.handoff is not None and self.handoff.fileno() != -1:
            # Take no more connections; closing the socket tells the parent so.
            asyncio.get_running_loop().remove_reader(self.handoff.fileno())
            self.handoff.close()
        services = getattr(self.app.state, "services", None)
        if services is not None:
            await services.runs.stop()
        await super().shutdown(sockets)


def serve(
    *,
    host: str,
    port: int,
    workers: int = 1,
    app_factory: str = APP_FACTORY,
    log_level: str = "info",
    worker_timeout_s: float = WORKER_TIMEOUT_S,
) -> None:
    """Serve the API until interrupted, in `workers` processes sharing one port.

    Each process calls `app_factory` with no arguments, so it reads its settings from the
    environment. With several, a parent process accepts the connections and deals them out
    in turn (`server.workers`), and kills and restarts a worker whose event loop has said
    nothing for `worker_timeout_s` (0: never).

    Raises:
        ConfigError: with several workers, the address cannot be listened on.
        WorkerStartError: a worker process could not start its app.
    """
    if workers == 1:
        factory = import_from_string(app_factory)
        AgentServer(factory(), host=host, port=port, log_level=log_level).run()
        return
    from server.workers import Supervisor

    Supervisor(
        app_factory=app_factory,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        timeout_s=worker_timeout_s,
    ).run()
