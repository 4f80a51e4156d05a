"""What the benchmarks share: errors, percentiles, versions, output, Postgres options, and
starting a server process and waiting for it."""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import httpx
import psycopg

from app.errors import AgentGraphError
from app.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[1]


class BenchmarkError(AgentGraphError):
    """A benchmarked run or request did not end the way the benchmark expects."""


def quantile(samples: Sequence[float], q: int) -> float:
    """Return the q-th percentile (inclusive method, interpolated); a lone sample is all."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def version(package: str) -> str | None:
    """The installed version of `package`, to compare figures across machines."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@contextmanager
def stdout_to_stderr() -> Iterator[TextIO]:
    """Send everything written to fd 1 (child processes included) to stderr meanwhile.

    Yields the real stdout, so that `--json` prints exactly one object on it.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with os.fdopen(os.dup(saved), "w") as real_stdout:
            yield real_stdout
            real_stdout.flush()
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """Add `--database-url` and `--data-dir`: which Postgres the benchmark uses."""
    parser.add_argument(
        "--database-url",
        default=None,
        help="Postgres (URL or conninfo) to use instead of DATABASE_URL or the embedded cluster",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory for the embedded cluster (default: AGENTGRAPH_DATA_DIR or the "
        "user data dir)",
    )


def check_database_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a `--database-url` that is no Postgres URL or conninfo (exits with status 2)."""
    if args.database_url:
        try:
            psycopg.conninfo.conninfo_to_dict(args.database_url)
        except psycopg.ProgrammingError:
            parser.error("--database-url must be a postgresql:// URL or a libpq conninfo string")


def settings_for(args: argparse.Namespace) -> Settings:
    """The process settings, with the data directory `--data-dir` names."""
    settings = get_settings()
    if args.data_dir is not None:
        settings = settings.model_copy(update={"data_dir": args.data_dir})
    return settings


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(
    proc: "subprocess.Popen[Any]",
    ready_url: str,
    *,
    name: str,
    timeout_s: float,
    output: Callable[[], str] | None = None,
) -> None:
    """Wait until `ready_url` answers 200.

    Raises:
        BenchmarkError: the process exited, or was not ready in time (it is then killed);
            the message ends with `output()` (the process's output, or where to find it).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise BenchmarkError(_said(f"{name} exited while starting", output))
        if time.monotonic() > deadline:
            proc.kill()
            raise BenchmarkError(_said(f"{name} did not become ready in {timeout_s:.0f} s", output))
        time.sleep(0.1)


def _said(message: str, output: Callable[[], str] | None) -> str:
    return f"{message}; {output()}" if output is not None else message
