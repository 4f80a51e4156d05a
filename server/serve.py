"""Run the app under uvicorn, in one process or several, ending in-flight streams cleanly
when asked to stop.

Several processes are uvicorn's own process manager (`uvicorn --workers`): the parent binds
the port, each worker accepts on it, a worker that dies or stops answering its health check
is started again, SIGHUP replaces the workers one by one, SIGTTIN adds one and SIGTTOU
retires one. Each worker also watches its own event loop (`server.watchdog`). The workers
share their counters and histograms through files in one directory, so that a scrape of
`/metrics`, whichever worker answers it, counts them all (`app.telemetry.metrics`).
"""

import contextlib
import ipaddress
import logging
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG, STARTUP_FAILURE
from uvicorn.importer import import_from_string
from uvicorn.supervisors import Multiprocess

from app.errors import ConfigError, WorkerStartError
from app.settings import get_settings
from app.telemetry.logs import logging_config
from app.telemetry.metrics import SHARED_DIR_ENV

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 10
APP_FACTORY = "server.app:create_app"
"""What each worker process serves: the app factory, reading its settings from the environment."""
WORKER_TIMEOUT_S = 60.0
"""How long a worker may not answer (its health check, or its event loop) before it is
replaced."""
HEALTHCHECK_S = 30
"""The shortest health-check timeout uvicorn is given. Its first health check of a new worker
also times the worker's start: a spawned worker imports the whole app (about 5 s on an idle
machine, more on a busy one) before it can answer, and one that does not answer in time is
killed and started again, over and over. A stuck event loop is the watchdog's to catch, within
`worker_timeout_s` however short."""


def _config(app: FastAPI | str, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    # JSON log lines: uvicorn's own loggers write through the root logger's JSON handler, in
    # this process and in each worker process (uvicorn applies the configuration in each).
    json_logs = get_settings().log_format == "json"
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
        log_config=logging_config("json", level=log_level.upper()) if json_logs else LOGGING_CONFIG,
    )


class AgentServer(uvicorn.Server):
    """uvicorn that first ends every run's stream with an `error` event, then stops.

    Under a signal the app does this itself (`server.runner.stopping_runs_on_exit_signals`);
    this covers a stop asked in code (`should_exit`), as in a server run in a thread.
    """

    def __init__(
        self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
    ) -> None:
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


def _listen(host: str, port: int) -> socket.socket:
    """Bind the port the workers share, as uvicorn does, with an error that says why not.

    Raises:
        ConfigError: the address cannot be listened on.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    """Whether `host` is an address only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def resolve_auth(host: str) -> None:
    """Decide `AGENTGRAPH_AUTH=auto` for a server listening on `host`: off on a loopback
    address, required on any other. The decision goes into the environment, where this
    process's settings (read again) and its worker processes find it.
    """
    if get_settings().auth != "auto":
        return
    os.environ["AGENTGRAPH_AUTH"] = "off" if is_loopback(host) else "required"
    get_settings.cache_clear()
    if not is_loopback(host):
        logger.info("listening on %s: API keys are required (AGENTGRAPH_AUTH)", host)


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
    environment. With several, uvicorn's process manager runs them, and a worker whose event
    loop is stuck for `worker_timeout_s` (0: not watched), or that does not answer uvicorn's
    health check for as long (and at least `HEALTHCHECK_S`), is replaced.

    Raises:
        ConfigError: with several workers, the address cannot be listened on.
        WorkerStartError: a worker process could not start its app.
    """
    resolve_auth(host)
    if workers == 1:
        _empty_named_metrics_dir()
        factory = import_from_string(app_factory)
        AgentServer(factory(), host=host, port=port, log_level=log_level).run()
        return
    # The workers are spawned: they read their settings, this one included, from the
    # environment they inherit.
    os.environ["AGENTGRAPH_WORKER_TIMEOUT_S"] = str(worker_timeout_s)
    config = _config(app_factory, host=host, port=port, log_level=log_level)
    config.factory = True
    config.workers = workers
    config.timeout_worker_healthcheck = max(math.ceil(worker_timeout_s), HEALTHCHECK_S)
    with _listen(host, port) as sock, _shared_metrics():
        manager = Multiprocess(config, sockets=[sock])
        manager.run()
    if any(p.exitcode == STARTUP_FAILURE for p in manager.processes):
        raise WorkerStartError(
            "a server worker process could not start its app; its log above says why"
        )


def _empty_named_metrics_dir() -> bool:
    """Empty the directory `SHARED_DIR_ENV` names, if any, of an earlier server's metrics
    files; return whether it names one."""
    named = os.environ.get(SHARED_DIR_ENV)
    if not named:
        return False
    shared = Path(named)
    shared.mkdir(parents=True, exist_ok=True)
    for stale in shared.glob("*.db"):
        stale.unlink()
    return True


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """A directory where the workers about to be spawned keep their metrics' values
    (`SHARED_DIR_ENV`): the one that variable names, emptied, else a temporary one, removed
    when the server stops. A worker that is replaced leaves its files, so counters never go
    back."""
    if _empty_named_metrics_dir():
        yield
        return
    made = tempfile.mkdtemp(prefix="agentgraph-metrics-")
    os.environ[SHARED_DIR_ENV] = made
    try:
        yield
    finally:
        os.environ.pop(SHARED_DIR_ENV, None)
        shutil.rmtree(made, ignore_errors=True)
