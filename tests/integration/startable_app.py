"""A minimal app whose start can be made to fail, for the tests of `serve --workers`:
`python -m tests.integration.startable_app PORT WORKERS` serves it; while the file named by
`AGENTGRAPH_TEST_FAIL_START` exists, a worker's app fails to start."""

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

FAIL_START = "AGENTGRAPH_TEST_FAIL_START"


def create_app() -> FastAPI:
    """The app: `GET /readyz` answers with the worker's process id."""
    fail = os.path.exists(os.environ[FAIL_START])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if fail:  # as an app that cannot reach its database does
            raise RuntimeError("told to fail at start")
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    def ready() -> dict[str, int]:
        return {"pid": os.getpid()}

    return app


if __name__ == "__main__":
    from server.serve import serve

    serve(
        host="127.0.0.1",
        port=int(sys.argv[1]),
        workers=int(sys.argv[2]),
        app_factory="tests.integration.startable_app:create_app",
    )
