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
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import httpx

from app.errors import AgentGraphError
from app.pg import redact, resolve_database_url
from app.settings import get_settings
from bench import dev_server, served
from bench.common import BenchmarkError, quantile, version
from bench.zero_model import MODEL_SPEC, REQUEST

logger = logging.getLogger("bench.http_load")


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
        p50_ms=quantile(samples, 50),
        p95_ms=quantile(samples, 95),
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
            run=dev_server.one_run if server else one_run,
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
    dev = dev_server.client(dev_base) if dev_base is not None else None
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
                    await dev_server.one_run(dev, unused)
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
            await served.delete_threads(url, threads)
    by_clients = {lv.clients: lv for lv in levels}
    figures: dict[str, Any] = {
        "runs": args.runs,
        "warmup": args.warmup,
        "workers": args.workers,
        "resumes": args.resumes,
        "request": REQUEST,
        "database_url": redact(url),
        "levels": [lv.as_dict() for lv in levels],
        "resume_to_metadata_p50_ms": round(quantile(to_metadata, 50), 3),
        "resume_to_first_event_p50_ms": round(quantile(to_graph, 50), 3),
        "resume_to_first_event_p95_ms": round(quantile(to_graph, 95), 3),
        "target_p50_ms": TARGET_P50_MS,
        "target_resume_ms": TARGET_RESUME_MS,
        "langgraph_dev_reference": LANGGRAPH_DEV_REFERENCE,
        "langgraph_dev_measured": False,
        "python": platform.python_version(),
        "langgraph": version("langgraph"),
        "uvicorn": version("uvicorn"),
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
        dev_server.compare(figures, dev_levels)
    return figures


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
        prog="python -m bench.http_load",
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
            proc, base = served.start(env, args.workers)
            servers.append(proc)
            dev_base = None
            if args.langgraph_dev:
                dev, dev_base = dev_server.start(env)
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
