"""What the benchmarks share: errors, percentiles, versions, output, Postgres options,
starting a server process and waiting for it, and reading its event streams."""

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import httpx
import psycopg

from app.errors import AgentGraphError
from app.pg import resolve_database_url
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


def run_benchmark(
    measure: Callable[[], dict[str, Any]],
    render: Callable[[dict[str, Any], TextIO], None],
    *,
    as_json: bool,
    logger: logging.Logger,
    passed: Callable[[dict[str, Any]], bool] = lambda figures: True,
) -> int:
    """Take a benchmark's figures and print them: one JSON object on stdout with `as_json`,
    else `render`'s report; everything else (child processes too) goes to stderr, progress
    as `logger`'s INFO lines.

    Returns:
        The exit code: 1 if the benchmark failed with an agentgraph error (logged) or its
        figures did not pass `passed`, else 0.
    """
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logger.setLevel(logging.INFO)
    with stdout_to_stderr() as out:
        try:
            figures = measure()
        except AgentGraphError as exc:
            logger.error("%s", exc)
            return 1
        if as_json:
            out.write(json.dumps(figures) + "\n")
        else:
            render(figures, out)
    return 0 if passed(figures) else 1


def serving_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of a server process the benchmark starts: this one's, on the Postgres
    `--database-url` or `--data-dir` name (resolved here, so that every server of the
    benchmark and its clean-up use the same one; the embedded cluster starts if need be)."""
    env = dict(os.environ)
    if args.data_dir is not None:
        env["AGENTGRAPH_DATA_DIR"] = str(args.data_dir)
    env["DATABASE_URL"] = args.database_url or resolve_database_url(settings_for(args))
    return env


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


@dataclass
class SseEvent:
    """One server-sent event."""

    event: str
    data: dict[str, Any]
    id: str | None = None
    """Its `id:` line: a background run's events carry their number."""


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse a text/event-stream response into events; comments (keep-alives) are skipped."""
    name = "message"
    data: list[str] = []
    event_id: str | None = None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SseEvent(event=name, data=json.loads("\n".join(data)), id=event_id)
            name, data, event_id = "message", [], None
        elif line.startswith(":"):
            continue
        elif line.startswith("id:"):
            event_id = line[len("id:") :].strip()
        elif line.startswith("event:"):
            name = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:") :].strip())
