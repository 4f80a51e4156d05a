"""`agentgraph`, the real CLI and server, with the scripted models of `tests.fakes` registered:
for tests that need a model they control in a process of their own, e.g.
`python -m tests.integration.scripted_agentgraph serve --port 8000`.

Server workers are processes of their own, which the CLI's `serve --workers` starts with the
plain app: `python -m tests.integration.scripted_agentgraph workers PORT N TIMEOUT_S` serves
`scripted_app` in N workers instead, as `serve --workers N --worker-timeout TIMEOUT_S` would.
"""

import sys

from fastapi import FastAPI

from cli.main import main
from server.app import create_app
from server.serve import serve
from tests.fakes import register_fakes


def scripted_app() -> FastAPI:
    """The server's app, in a process where the scripted models are registered."""
    register_fakes()
    return create_app()


if __name__ == "__main__":
    register_fakes()
    if sys.argv[1:2] == ["workers"]:
        port, workers, timeout_s = sys.argv[2:5]
        serve(
            host="127.0.0.1",
            port=int(port),
            workers=int(workers),
            worker_timeout_s=float(timeout_s),
            app_factory="tests.integration.scripted_agentgraph:scripted_app",
        )
    else:
        main()
