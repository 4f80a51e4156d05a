"""Background runs on the queue: throughput with 1, 2 and 4 workers, and the queue's latency.

An API server that executes nothing itself (`AGENTGRAPH_SERVE_WORKER=false`) takes `--runs`
background runs at once (`POST /api/v1/runs`, plan mode, four parallel steps, the
zero-latency model of `bench.zero_model`), and N `agentgraph worker` processes execute them:
runs a second from the first POST to the last run's end. Beside it, the same runs streamed
from a server that executes them in its own process (`POST /api/v1/agent/run`).

Latency, one run at a time: from the POST to the first event of the run that a client
streaming it sees (`--latency-runs` runs), for a background run (POST, then GET its stream)
and for a streamed one (`POST /api/v1/agent/run.stream`); and the queue's own wait, from the
run's row to its start on a worker (the run's `created_at` to `started_at`).

Run from the repository root:

    python -m bench.background [--workers 1,2,4] [--runs 40] [--latency-runs 20] [--json]
                               [--database-url URL] [--data-dir DIR]
"""

import argparse
import asyncio
import logging
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import httpx
import psycopg

from bench import served
from bench.common import (
    REPO,
    BenchmarkError,
    add_database_options,
    check_database_options,
    quantile,
    run_benchmark,
    serving_env,
    sse_events,
)
from bench.zero_model import MODEL_SPEC, REQUEST

logger = logging.getLogger("bench.background")

RUN_BODY = {"question": REQUEST, "model": MODEL_SPEC, "approval": "never", "mode": "plan"}
ENDED = {"interrupted", "done", "failed", "rejected", "cancelled"}
READY_S = 120.0


def start_api(env: dict[str, str], *, execute: bool) -> tuple["subprocess.Popen[bytes]", str]:
    """Start an API server (with its in-process queue worker when `execute`)."""
    return served.start({**env, "AGENTGRAPH_SERVE_WORKER": str(execute).lower()}, workers=1)


def start_worker(env: dict[str, str], *, log: Any = None) -> "subprocess.Popen[bytes]":
    """Start an `agentgraph worker` process with the zero-latency model registered."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.zero_model", "worker"],
        cwd=REPO,
        env=env,
        stdout=log or sys.stderr,
        stderr=subprocess.STDOUT if log else sys.stderr,
    )


async def wait_for_workers(url: str, count: int, *, timeout_s: float = READY_S) -> None:
    """Wait until `count` queue workers send heartbeats.

    Raises:
        BenchmarkError: they did not, in time.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            try:
                cursor = await conn.execute(
                    "SELECT count(*) FROM procrastinate_workers"
                    " WHERE last_heartbeat > now() - interval '5 seconds'"
                )
                row = await cursor.fetchone()
                alive = int(row[0]) if row else 0
            except psycopg.errors.UndefinedTable:
                alive = 0
        if alive >= count:
            return
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{alive} of {count} queue workers started in {timeout_s} s")
        await asyncio.sleep(0.2)


def stop(procs: list["subprocess.Popen[bytes]"]) -> None:
    """Stop processes (SIGTERM, then SIGKILL)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _queued_throughput(base: str, runs: int) -> float:
    """Queue `runs` runs at once; return runs a second until the last one ended."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        started = time.perf_counter()
        posted = await asyncio.gather(
            *(client.post("/api/v1/runs", json=RUN_BODY) for _ in range(runs))
        )
        if any(r.status_code != 202 for r in posted):
            raise BenchmarkError(
                f"a run was not queued: {[r.text for r in posted if r.status_code != 202][:1]}"
            )
        ids = {r.json()["run_id"] for r in posted}
        while True:
            listed = (await client.get("/api/v1/runs", params={"limit": 500})).json()
            mine = [r for r in listed if r["run_id"] in ids]
            if len(mine) == runs and all(r["status"] in ENDED for r in mine):
                break
            await asyncio.sleep(0.02)
        took = time.perf_counter() - started
    failed = [r for r in mine if r["status"] != "done"]
    if failed:
        raise BenchmarkError(f"{len(failed)} runs did not finish: {failed[0]}")
    return runs / took


async def _streamed_throughput(base: str, runs: int) -> float:
    """Start `runs` waited runs at once on a server that executes them; return runs a second."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        started = time.perf_counter()
        done = await asyncio.gather(
            *(client.post("/api/v1/agent/run", json=RUN_BODY) for _ in range(runs))
        )
        took = time.perf_counter() - started
    if any(r.status_code != 200 or r.json()["status"] != "done" for r in done):
        raise BenchmarkError("a streamed run did not finish")
    return runs / took


async def _time_stream(response: httpx.Response, started: float) -> float:
    """Read a run's stream to its end; return the seconds from `started` to its first event."""
    first: float | None = None
    async for event in sse_events(response):
        if first is None and event.event != "metadata":
            first = time.perf_counter() - started
    if first is None:
        raise BenchmarkError("a stream ended without an event")
    return first


async def _latencies(base: str, runs: int) -> dict[str, list[float]]:
    """One run at a time: POST to first event, queued and streamed; the queue's wait."""
    first_queued: list[float] = []
    first_streamed: list[float] = []
    waits: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        for _ in range(runs):
            started = time.perf_counter()
            posted = (await client.post("/api/v1/runs", json=RUN_BODY)).json()
            async with client.stream("GET", posted["stream_url"]) as response:
                first_queued.append(await _time_stream(response, started))
            run = (await client.get(posted["stream_url"].removesuffix("/stream"))).json()
            waits.append(
                (
                    datetime.fromisoformat(run["started_at"])
                    - datetime.fromisoformat(run["created_at"])
                ).total_seconds()
            )
            started = time.perf_counter()
            async with client.stream("POST", "/api/v1/agent/run.stream", json=RUN_BODY) as response:
                first_streamed.append(await _time_stream(response, started))
    return {"queued": first_queued, "streamed": first_streamed, "queue_wait": waits}


def _ms(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(quantile(samples, 50) * 1000, 1),
        "p95_ms": round(quantile(samples, 95) * 1000, 1),
    }


async def measure(
    env: dict[str, str], *, workers: list[int], runs: int, latency_runs: int
) -> dict[str, Any]:
    """Take every figure on the database `env` names."""
    url = env["DATABASE_URL"]
    figures: dict[str, Any] = {"runs": runs, "model": MODEL_SPEC, "queued": {}}
    api, base = start_api(env, execute=True)
    try:
        await _streamed_throughput(base, 4)  # warm up
        figures["streamed_runs_per_s"] = round(await _streamed_throughput(base, runs), 2)
        logger.info("streamed, executed by the server: %s runs/s", figures["streamed_runs_per_s"])
        await wait_for_workers(url, 1)
        lat = await _latencies(base, latency_runs)
        figures["first_event"] = {"queued": _ms(lat["queued"]), "streamed": _ms(lat["streamed"])}
        figures["queue_wait"] = _ms(lat["queue_wait"])
    finally:
        stop([api])
    for count in workers:
        api, base = start_api(env, execute=False)
        pool = [start_worker(env) for _ in range(count)]
        try:
            await wait_for_workers(url, count)
            await _queued_throughput(base, 4)  # warm up
            rate = await _queued_throughput(base, runs)
            figures["queued"][str(count)] = round(rate, 2)
            logger.info("%d workers: %.2f runs/s", count, rate)
        finally:
            stop([api, *pool])
    return figures


def render_table(f: dict[str, Any], out: TextIO) -> None:
    """Print the figures as a short readable report."""
    lines = [
        f"agentgraph background runs: {f['runs']} runs at once, model {f['model']}",
        "",
        "throughput (runs/s)",
        f"  {'streamed, executed by the server process':<41}  {f['streamed_runs_per_s']:>8}",
    ]
    for n, rate in f["queued"].items():
        label = f"queued, {n} worker process{'es' if n != '1' else ''}"
        lines.append(f"  {label:<41}  {rate:>8}")
    lines += ["", "latency, one run at a time (p50 / p95 ms)"]
    for label, figure in (
        ("POST to first event, queued  ", f["first_event"]["queued"]),
        ("POST to first event, streamed", f["first_event"]["streamed"]),
        ("queue wait (row to worker)   ", f["queue_wait"]),
    ):
        lines.append(f"  {label}  {figure['p50_ms']:>7} / {figure['p95_ms']}")
    out.write("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.background",
        description="Throughput and latency of background runs on the queue.",
    )
    parser.add_argument("--workers", default="1,2,4", help="worker process counts to measure")
    parser.add_argument("--runs", type=int, default=40, help="runs queued at once per count")
    parser.add_argument("--latency-runs", type=int, default=20, help="runs timed one at a time")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_database_options(parser)
    args = parser.parse_args(argv)
    try:
        args.worker_counts = [int(n) for n in args.workers.split(",")]
    except ValueError:
        parser.error("--workers takes counts separated by commas, e.g. 1,2,4")
    if not all(1 <= n <= 16 for n in args.worker_counts):
        parser.error("--workers counts must be 1 to 16")
    if not 1 <= args.runs <= 500 or not 1 <= args.latency_runs <= 500:
        parser.error("--runs and --latency-runs must be 1 to 500")
    check_database_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; return the exit code."""
    args = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    env = serving_env(args)

    def take() -> dict[str, Any]:
        return asyncio.run(
            measure(env, workers=args.worker_counts, runs=args.runs, latency_runs=args.latency_runs)
        )

    return run_benchmark(take, render_table, as_json=args.json, logger=logger)


if __name__ == "__main__":
    sys.exit(main())
