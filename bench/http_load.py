"""Measure the HTTP API: whole runs over HTTP at 1, 10 and 50 concurrent clients, and how
soon a resumed run streams its first event.

The server is `agentgraph serve`'s app under uvicorn in a child process, with the
zero-latency chat model of `bench.overhead` registered, on the same Postgres the application
uses. The clients are `httpx` in this process.

Run from the repository root, as a module (as a script, `bench/` would shadow the standard
library's `http` package):

    python -m bench.http [--runs 200] [--warmup 20] [--clients 1,10,50] [--resumes 100]
                         [--json] [--database-url URL] [--data-dir DIR]

The figures and the JSON fields are described in bench/README.md.
"""

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import httpx
from fastapi import FastAPI

from app.db import open_database
from app.errors import AgentGraphError
from app.pg import redact, resolve_database_url
from app.settings import get_settings

logger = logging.getLogger("bench.http")

REPO = Path(__file__).resolve().parents[1]

REQUEST = "What is a B-tree? What is an LSM tree?"
MODEL_SPEC = "bench:zero"
RUN_BODY = {"question": REQUEST, "model": MODEL_SPEC, "approval": "never", "mode": "plan"}
WAIT_BODY = {**RUN_BODY, "approval": "always"}
TARGET_P50_MS = 50.0
"""Whole-run p50 at one client should be under this."""
TARGET_RESUME_MS = 20.0
"""Resume to the first graph event, p50, should be under this."""
LANGGRAPH_DEV_REFERENCE = {
    "p50_ms_1_client": 1000.0,
    "runs_per_s_10_clients": 57.0,
    "runs_per_s_50_clients": 57.0,
}
"""`langgraph dev` on a trivial two-node graph on this kind of machine (from the issue that
asked for this benchmark; not measured by this script)."""


class BenchmarkError(AgentGraphError):
    """A benchmarked request did not end the way the benchmark expects."""


def _quantile(samples: list[float], q: int) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


@dataclass(frozen=True)
class Level:
    """Figures of one concurrency level."""

    clients: int
    runs: int
    p50_ms: float
    p95_ms: float
    runs_per_s: float

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON fields of this level."""
        return {
            "clients": self.clients,
            "runs": self.runs,
            "p50_ms": round(self.p50_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "runs_per_s": round(self.runs_per_s, 2),
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def bench_app() -> FastAPI:
    """The served app with the zero-latency model registered (an app factory for uvicorn)."""
    from app.models import register_chat_model
    from bench.overhead import zero_latency_factory
    from server.app import create_app

    register_chat_model("bench", zero_latency_factory)
    return create_app(get_settings())


def serve_child(port: int, workers: int) -> None:
    """Serve the benchmark's app (the child process's job), as `agentgraph serve` does."""
    from server.serve import serve

    serve(
        host="127.0.0.1",
        port=port,
        workers=workers,
        app_factory="bench.http:bench_app",
        log_level="warning",
    )


def wait_ready(
    proc: subprocess.Popen[bytes], ready_url: str, *, name: str, timeout_s: float
) -> None:
    """Wait until `ready_url` answers 200.

    Raises:
        BenchmarkError: the process exited, or was not ready in time (it is then killed).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise BenchmarkError(f"{name} exited while starting")
        if time.monotonic() > deadline:
            proc.kill()
            raise BenchmarkError(f"{name} did not become ready in {timeout_s:.0f} s")
        time.sleep(0.1)


def start_server(env: dict[str, str], workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server process and wait until it is ready."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.http", "--serve-child", str(port), "--workers", str(workers)],
        cwd=REPO,
        env=env,
        stdout=sys.stderr,
        stderr=sys.stderr,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{base}/readyz", name="the server", timeout_s=120)
    return proc, base


def start_langgraph_dev(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start `langgraph dev` on the same graph (bench/langgraph.json) and wait until it is up.

    Raises:
        BenchmarkError: `langgraph dev` is not installed, exited, or did not come up.
    """
    executable = Path(sys.executable).with_name("langgraph")
    if not executable.exists():
        raise BenchmarkError("langgraph dev is not installed: pip install 'langgraph-cli[inmem]'")
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(executable),
            "dev",
            "--no-browser",
            "--no-reload",
            "--allow-blocking",
            "--port",
            str(port),
            "--config",
            str(REPO / "bench" / "langgraph.json"),
        ],
        # langgraph dev resolves the graph's path from its working directory.
        cwd=REPO / "bench",
        env={**env, "PYTHONPATH": str(REPO), "LANGGRAPH_CLI_NO_ANALYTICS": "1"},
        stdout=sys.stderr,
        stderr=sys.stderr,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{base}/ok", name="langgraph dev", timeout_s=180)
    return proc, base


async def dev_one_run(client: Any, threads: list[str]) -> float:
    """Run the graph once under `langgraph dev` with `runs.wait` (stateless); return ms."""
    started = time.perf_counter()
    output = await client.runs.wait(
        None,
        "agent",
        input={"request": REQUEST},
        context={"model": MODEL_SPEC, "approval": "never", "mode": "plan"},
    )
    elapsed = (time.perf_counter() - started) * 1000
    if not isinstance(output, dict) or output.get("status") != "done":
        raise BenchmarkError(f"a langgraph dev run did not finish: {output}")
    return elapsed


async def one_run(client: httpx.AsyncClient, threads: list[str]) -> float:
    """Run one fresh thread to its end over `POST /api/v1/agent/run`; return ms."""
    started = time.perf_counter()
    response = await client.post("/api/v1/agent/run", json=RUN_BODY)
    elapsed = (time.perf_counter() - started) * 1000
    body = response.json()
    if response.status_code != 200 or body.get("status") != "done":
        raise BenchmarkError(f"a run did not finish: {response.status_code} {body}")
    threads.append(body["thread_id"])
    return elapsed


async def timed_runs(
    client: Any, *, clients: int, runs: int, threads: list[str], run: Any = None
) -> tuple[list[float], float]:
    """Run `runs` runs with `clients` concurrent clients, each running one after another;
    return each run's ms and the wall time in seconds."""
    samples: list[float] = []
    queue = iter(range(runs))

    run_fn = run or one_run

    async def worker() -> None:
        for _ in queue:
            samples.append(await run_fn(client, threads))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return samples, time.perf_counter() - started


def _level(clients: int, samples: list[float], wall_s: float) -> Level:
    return Level(
        clients=clients,
        runs=len(samples),
        p50_ms=_quantile(samples, 50),
        p95_ms=_quantile(samples, 95),
        runs_per_s=len(samples) / wall_s,
    )


async def level(
    client: Any, *, clients: int, runs: int, threads: list[str], run: Any = None
) -> Level:
    """Run `runs` runs with `clients` concurrent clients, each running one after another."""
    samples, wall_s = await timed_runs(client, clients=clients, runs=runs, threads=threads, run=run)
    return _level(clients, samples, wall_s)


async def resume_latency(
    client: httpx.AsyncClient, *, resumes: int, threads: list[str]
) -> tuple[list[float], list[float]]:
    """Stop runs at the approval gate, then time each resume to its first events.

    Returns the times to the first SSE event (`metadata`) and to the first event of the
    graph, in ms.
    """
    to_metadata: list[float] = []
    to_graph_event: list[float] = []
    for _ in range(resumes):
        waiting = (await client.post("/api/v1/agent/run", json=WAIT_BODY)).json()
        if waiting.get("status") != "interrupted":
            raise BenchmarkError(f"the run did not stop at the approval gate: {waiting}")
        thread_id = waiting["thread_id"]
        threads.append(thread_id)
        started = time.perf_counter()
        async with client.stream(
            "POST", f"/api/v1/threads/{thread_id}/resume.stream", json={"decision": "approve"}
        ) as response:
            if response.status_code != 200:
                raise BenchmarkError(f"resume failed: {response.status_code}")
            lines = response.aiter_lines()
            async for line in lines:
                if not line.startswith("event:"):
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                if line == "event: metadata":
                    to_metadata.append(elapsed)
                else:
                    to_graph_event.append(elapsed)
                    break
            async for _ in lines:
                pass  # read the run to its end before the next one
    return to_metadata, to_graph_event


async def delete_threads(url: str | None, threads: list[str]) -> None:
    """Delete the benchmark's threads, so they do not crowd the user's thread list."""
    settings = get_settings()
    async with open_database(settings, url=url) as db:
        for thread_id in threads:
            await db.saver.adelete_thread(thread_id)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


async def _paired_level(
    client: httpx.AsyncClient, dev: Any, *, clients: int, runs: int, first: int, threads: list[str]
) -> tuple[Level, Level]:
    """Measure one level on both servers in two halves each, in the order ABBA (BAAB when
    `first` is 1), so that a machine that speeds up or slows down steadily during the level
    touches both alike; return our figures and `langgraph dev`'s."""
    half = (runs + 1) // 2
    shares = (half, runs - half)
    samples: tuple[list[float], list[float]] = ([], [])
    walls = [0.0, 0.0]
    for turn, server in enumerate((first, 1 - first, 1 - first, first)):
        count = shares[turn // 2]
        if count == 0:
            continue
        name = "langgraph dev" if server else "agentgraph"
        logger.info("%s: measuring %d runs at %d clients", name, count, clients)
        taken, wall_s = await timed_runs(
            dev if server else client,
            clients=clients,
            runs=count,
            threads=[] if server else threads,
            run=dev_one_run if server else one_run,
        )
        samples[server].extend(taken)
        walls[server] += wall_s
    return _level(clients, samples[0], walls[0]), _level(clients, samples[1], walls[1])


async def measure(
    args: argparse.Namespace, base: str, url: str, dev_base: str | None = None
) -> dict[str, Any]:
    """Warm up, measure every concurrency level and the resumes; return the figures.

    With `dev_base` (`langgraph dev`, already running), each level is measured on both
    servers in turn, half the runs each, then the other halves in the opposite order
    (`_paired_level`), so a change in the machine's speed touches both alike.
    """
    threads: list[str] = []
    limits = httpx.Limits(max_connections=max(args.clients) + 5)
    dev = _dev_client(dev_base) if dev_base is not None else None
    unused: list[str] = []
    dev_levels: list[Level] = []
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        try:
            logger.info("warming up: %d runs", args.warmup)
            for _ in range(args.warmup):
                await one_run(client, threads)
            if dev is not None:
                logger.info("langgraph dev: warming up: %d runs", args.warmup)
                for _ in range(args.warmup):
                    await dev_one_run(dev, unused)
            levels: list[Level] = []
            for i, clients in enumerate(args.clients):
                if dev is None:
                    logger.info("measuring: %d runs at %d clients", args.runs, clients)
                    levels.append(
                        await level(client, clients=clients, runs=args.runs, threads=threads)
                    )
                    continue
                ours, theirs = await _paired_level(
                    client, dev, clients=clients, runs=args.runs, first=i % 2, threads=threads
                )
                levels.append(ours)
                dev_levels.append(theirs)
            logger.info("measuring: %d resumes", args.resumes)
            to_metadata, to_graph = await resume_latency(
                client, resumes=args.resumes, threads=threads
            )
        finally:
            logger.info("deleting %d benchmark threads", len(threads))
            await delete_threads(url, threads)
    by_clients = {lv.clients: lv for lv in levels}
    figures: dict[str, Any] = {
        "runs": args.runs,
        "warmup": args.warmup,
        "workers": args.workers,
        "resumes": args.resumes,
        "request": REQUEST,
        "database_url": redact(url),
        "levels": [lv.as_dict() for lv in levels],
        "resume_to_metadata_p50_ms": round(_quantile(to_metadata, 50), 3),
        "resume_to_first_event_p50_ms": round(_quantile(to_graph, 50), 3),
        "resume_to_first_event_p95_ms": round(_quantile(to_graph, 95), 3),
        "target_p50_ms": TARGET_P50_MS,
        "target_resume_ms": TARGET_RESUME_MS,
        "langgraph_dev_reference": LANGGRAPH_DEV_REFERENCE,
        "langgraph_dev_measured": False,
        "python": platform.python_version(),
        "langgraph": _version("langgraph"),
        "uvicorn": _version("uvicorn"),
    }
    if 1 in by_clients:
        p50 = by_clients[1].p50_ms
        figures["meets_p50_target"] = p50 < TARGET_P50_MS
        figures["speedup_p50_vs_reference"] = round(
            LANGGRAPH_DEV_REFERENCE["p50_ms_1_client"] / p50, 2
        )
    for n in (10, 50):
        if n in by_clients:
            ref = LANGGRAPH_DEV_REFERENCE[f"runs_per_s_{n}_clients"]
            figures[f"throughput_ratio_vs_reference_{n}_clients"] = round(
                by_clients[n].runs_per_s / ref, 2
            )
    figures["meets_resume_target"] = figures["resume_to_first_event_p50_ms"] < TARGET_RESUME_MS
    if dev_levels:
        compare(figures, dev_levels)
    return figures


def _dev_client(base: str) -> Any:
    """A `langgraph_sdk` client of `langgraph dev` at `base`."""
    from langgraph_sdk import get_client

    return get_client(url=base, timeout=300)


def compare(figures: dict[str, Any], dev_levels: list[Level]) -> None:
    """Add `langgraph dev`'s figures and ours-versus-theirs ratios to `figures`."""
    ours = {lv["clients"]: lv for lv in figures["levels"]}
    figures["langgraph_dev_measured"] = True
    figures["langgraph_dev_levels"] = [lv.as_dict() for lv in dev_levels]
    for dev in dev_levels:
        mine = ours.get(dev.clients)
        if mine is None:
            continue
        figures[f"p50_speedup_vs_langgraph_dev_{dev.clients}_clients"] = round(
            dev.p50_ms / mine["p50_ms"], 2
        )
        figures[f"throughput_ratio_vs_langgraph_dev_{dev.clients}_clients"] = round(
            mine["runs_per_s"] / dev.runs_per_s, 2
        )


def render_table(f: dict[str, Any], out: TextIO) -> None:
    """Print the figures as a short readable report."""
    lines = [
        f"agentgraph HTTP API: zero-latency model, {f['runs']} runs per level "
        f"({f['warmup']} warm-up), POST /api/v1/agent/run",
        f"request: {f['request']!r}; postgres: {f['database_url']}",
        "",
        f"{'clients':>8}{'p50 ms':>10}{'p95 ms':>10}{'runs/s':>10}",
    ]
    for lv in f["levels"]:
        lines.append(
            f"{lv['clients']:>8}{lv['p50_ms']:>10.2f}{lv['p95_ms']:>10.2f}{lv['runs_per_s']:>10.1f}"
        )
    lines += [
        "",
        f"resume -> metadata p50: {f['resume_to_metadata_p50_ms']:.2f} ms; "
        f"-> first graph event p50: {f['resume_to_first_event_p50_ms']:.2f} ms "
        f"(p95 {f['resume_to_first_event_p95_ms']:.2f} ms, {f['resumes']} resumes)",
        "",
        "against the langgraph dev reference (not measured here: "
        f"{LANGGRAPH_DEV_REFERENCE['p50_ms_1_client']:.0f} ms p50, "
        f"{LANGGRAPH_DEV_REFERENCE['runs_per_s_10_clients']:.0f} runs/s):",
    ]
    if f.get("langgraph_dev_measured"):
        lines += ["", "langgraph dev, same graph and load (runs.wait, stateless):"]
        lines.append(f"{'clients':>8}{'p50 ms':>10}{'p95 ms':>10}{'runs/s':>10}")
        for lv in f["langgraph_dev_levels"]:
            lines.append(
                f"{lv['clients']:>8}{lv['p50_ms']:>10.2f}{lv['p95_ms']:>10.2f}"
                f"{lv['runs_per_s']:>10.1f}"
            )
        lines += [f"  {k}: {v}x" for k, v in f.items() if "_vs_langgraph_dev_" in k]
    for key in (
        "speedup_p50_vs_reference",
        "throughput_ratio_vs_reference_10_clients",
        "throughput_ratio_vs_reference_50_clients",
    ):
        if key in f:
            lines.append(f"  {key}: {f[key]}x")
    out.write("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.http",
        description="Whole zero-latency runs over the HTTP API at several concurrency levels.",
    )
    parser.add_argument("--runs", type=int, default=200, help="measured runs per level")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured runs first")
    parser.add_argument("--clients", default="1,10,50", help="comma-separated concurrency levels")
    parser.add_argument("--resumes", type=int, default=100, help="measured resumes")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--database-url", default=None, help="Postgres URL or conninfo")
    parser.add_argument("--data-dir", type=Path, default=None, help="embedded cluster's home")
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes, as `agentgraph serve --workers`"
    )
    parser.add_argument(
        "--langgraph-dev",
        action="store_true",
        help="also run the same graph and load under `langgraph dev` and compare",
    )
    parser.add_argument("--serve-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        parser.error("--clients must be comma-separated integers")
    if not args.clients or min(args.clients) < 1:
        parser.error("--clients must list positive integers")
    if args.runs < 1 or args.resumes < 1 or args.warmup < 0:
        parser.error("--runs and --resumes must be at least 1, --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; return the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if args.serve_child is not None:
        serve_child(args.serve_child, args.workers)
        return 0
    env = dict(os.environ)
    if args.data_dir is not None:
        env["AGENTGRAPH_DATA_DIR"] = str(args.data_dir)
    settings = get_settings().model_copy(
        update={"data_dir": args.data_dir} if args.data_dir is not None else {}
    )
    try:
        # Resolve once here, so the server and the clean-up use the same database.
        url = args.database_url or resolve_database_url(settings)
        env["DATABASE_URL"] = url
        servers: list[subprocess.Popen[bytes]] = []
        try:
            proc, base = start_server(env, args.workers)
            servers.append(proc)
            dev_base = None
            if args.langgraph_dev:
                dev, dev_base = start_langgraph_dev(env)
                servers.append(dev)
            figures = asyncio.run(measure(args, base, url, dev_base))
        finally:
            for server in servers:
                server.send_signal(signal.SIGTERM)
            for server in servers:
                server.wait(timeout=60)
    except AgentGraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(figures))
    else:
        render_table(figures, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
