"""Run the app under uvicorn, in one process or several, ending in-flight streams cleanly
when asked to stop."""

import logging
import socket

import uvicorn
from fastapi import FastAPI
from uvicorn.importer import import_from_string
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 10
APP_FACTORY = "server.app:create_app"
"""What each worker process serves: the app factory, reading its settings from the environment."""


def _config(
    app: FastAPI | str, *, host: str, port: int, log_level: str, workers: int = 1
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        host=host,
        port=port,
        log_level=log_level,
        workers=workers,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )


class AgentServer(uvicorn.Server):
    """uvicorn that first ends every run's stream with an `error` event, then stops."""

    def __init__(self, app: FastAPI, *, host: str, port: int, log_level: str = "info") -> None:
        super().__init__(_config(app, host=host, port=port, log_level=log_level))
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End every run's stream with an `error` event, then shut down as uvicorn does.

        The runs' checkpoints keep every finished step; any server can resume them later.
        """
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
) -> None:
    """Serve the API until interrupted, in `workers` processes sharing one port.

    Each process calls `app_factory` with no arguments, so it reads its settings from the
    environment. Several processes are started and watched by uvicorn's supervisor.
    """
    if workers == 1:
        factory = import_from_string(app_factory)
        AgentServer(factory(), host=host, port=port, log_level=log_level).run()
        return
    # uvicorn's supervisor runs its own server class in each worker: there the app's
    # lifespan (`stopping_runs_on_exit_signals`) ends the streams when the signal comes.
    config = _config(app_factory, host=host, port=port, log_level=log_level, workers=workers)
    Multiprocess(config, sockets=[config.bind_socket()]).run()
