"""Run the app under uvicorn, ending in-flight streams cleanly when asked to stop."""

import logging
import socket

import uvicorn
from fastapi import FastAPI

from app.settings import Settings
from server.app import create_app

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 10


class AgentServer(uvicorn.Server):
    """uvicorn that first ends every run's stream with an `error` event, then stops."""

    def __init__(self, app: FastAPI, *, host: str, port: int, log_level: str = "info") -> None:
        super().__init__(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level=log_level,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                lifespan="on",
            )
        )
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End every run's stream with an `error` event, then shut down as uvicorn does.

        The runs' checkpoints keep every finished step; any server can resume them later.
        """
        services = getattr(self.app.state, "services", None)
        if services is not None:
            await services.runs.stop()
        await super().shutdown(sockets)


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Serve the API until interrupted."""
    server = AgentServer(create_app(settings), host=host, port=port)
    server.run()
