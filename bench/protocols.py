"""Measure what the OpenAI-compatible surface adds to a run: whole streamed runs of the same
graph on the zero-latency model over the native SSE API (`POST /api/v1/agent/run.stream`),
`POST /v1/chat/completions` with `stream: true` (and usage), and `POST /v1/responses` with
`stream: true`, at one client and at ten.

The server is `bench.served` (the app with the zero-latency model) in a child process; the
clients are `httpx` in this process. A run is timed from the request to the stream's last
byte, each on a new thread. The surfaces take turns in blocks (ABC CBA ...), so that a
machine that speeds up or slows down during a level touches all alike.

    python -m bench.protocols [--runs 200] [--warmup 20] [--clients 1,10] [--blocks 4]
                              [--json] [--database-url URL] [--data-dir DIR]

The figures and the JSON fields are described in bench/README.md. Exit code 1 when a
protocol's p50 at one client is more than 10% above the native figure.
"""

import argparse
import asyncio
import logging
import platform
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import httpx

from bench import served
from bench.common import (
    BenchmarkError,
    add_database_options,
    check_database_options,
    quantile,
    run_benchmark,
    serving_env,
    sse_events,
    version,
)
from bench.zero_model import MODEL_SPEC, REQUEST

logger = logging.getLogger("bench.protocols")

OPTIONS = {"approval": "never", "mode": "plan"}
TARGET_OVERHEAD = 0.10
"""A protocol's p50 at one client should be at most this much above the native one."""
Run = Callable[[httpx.AsyncClient, list[str]], Awaitable[float]]


async def native_run(client: httpx.AsyncClient, threads: list[str]) -> float:
    """One run over the native SSE API; return ms to the stream's end."""
    started = time.perf_counter()
    final = None
    async with client.stream(
        "POST",
        "/api/v1/agent/run.stream",
        json={"question": REQUEST, "model": MODEL_SPEC, **OPTIONS},
    ) as response:
        async for event in sse_events(response):
            if event.event == "metadata":
                threads.append(event.data["thread_id"])
            elif event.event == "final":
                final = event.data
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200 or final is None or final.get("status") != "done":
        raise BenchmarkError(f"a native run did not finish: {response.status_code} {final}")
    return elapsed


def _sse_data(lines: list[str]) -> list[str]:
    return [line[len("data:") :].strip() for line in lines if line.startswith("data:")]


async def chat_run(client: httpx.AsyncClient, threads: list[str]) -> float:
    """One streamed chat completion with usage, on a new thread; return ms to `[DONE]`."""
    thread_id = f"bench-{uuid.uuid4().hex}"
    threads.append(thread_id)
    body = {
        "model": f"agentgraph:{MODEL_SPEC}",
        "messages": [{"role": "user", "content": REQUEST}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "agentgraph": OPTIONS,
    }
    started = time.perf_counter()
    async with client.stream(
        "POST", "/v1/chat/completions", json=body, headers={"X-Thread-Id": thread_id}
    ) as response:
        lines = [line async for line in response.aiter_lines()]
    elapsed = (time.perf_counter() - started) * 1000
    data = _sse_data(lines)
    if response.status_code != 200 or not data or data[-1] != "[DONE]" or '"usage"' not in data[-2]:
        raise BenchmarkError(
            f"a chat completion did not finish: {response.status_code} {data[-3:]}"
        )
    return elapsed


async def responses_run(client: httpx.AsyncClient, threads: list[str]) -> float:
    """One streamed response (not stored), on a new thread; return ms to its last event."""
    thread_id = f"bench-{uuid.uuid4().hex}"
    threads.append(thread_id)
    body = {
        "model": f"agentgraph:{MODEL_SPEC}",
        "input": REQUEST,
        "stream": True,
        "store": False,
        "agentgraph": OPTIONS,
    }
    started = time.perf_counter()
    last = None
    async with client.stream(
        "POST", "/v1/responses", json=body, headers={"X-Thread-Id": thread_id}
    ) as response:
        async for event in sse_events(response):
            last = event.event
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200 or last != "response.completed":
        raise BenchmarkError(f"a response did not complete: {response.status_code} {last}")
    return elapsed


SURFACES: dict[str, Run] = {
    "native_sse": native_run,
    "chat_completions": chat_run,
    "responses": responses_run,
}


async def _runs(
    client: httpx.AsyncClient, run: Run, *, clients: int, count: int, threads: list[str]
) -> tuple[list[float], float]:
    """`count` runs by `clients` concurrent clients; each run's ms and the wall seconds."""
    samples: list[float] = []
    queue = iter(range(count))

    async def worker() -> None:
        for _ in queue:
            samples.append(await run(client, threads))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return samples, time.perf_counter() - started


async def level(
    client: httpx.AsyncClient, *, clients: int, runs: int, blocks: int, threads: list[str]
) -> dict[str, Any]:
    """Measure every surface at one concurrency level, in alternating blocks."""
    names = list(SURFACES)
    samples: dict[str, list[float]] = {n: [] for n in names}
    walls = dict.fromkeys(names, 0.0)
    per_block = [runs // blocks + (1 if b < runs % blocks else 0) for b in range(blocks)]
    for b, count in enumerate(per_block):
        for name in names if b % 2 == 0 else reversed(names):
            if count:
                taken, wall_s = await _runs(
                    client, SURFACES[name], clients=clients, count=count, threads=threads
                )
                samples[name] += taken
                walls[name] += wall_s
    figures: dict[str, Any] = {"clients": clients}
    for name in names:
        figures[name] = {
            "runs": len(samples[name]),
            "p50_ms": round(quantile(samples[name], 50), 3),
            "p95_ms": round(quantile(samples[name], 95), 3),
            "runs_per_s": round(len(samples[name]) / walls[name], 2),
        }
    native = figures["native_sse"]
    for name in names[1:]:
        figures[name]["p50_overhead"] = round(figures[name]["p50_ms"] / native["p50_ms"] - 1, 4)
        figures[name]["throughput_ratio"] = round(
            figures[name]["runs_per_s"] / native["runs_per_s"], 4
        )
    return figures


async def measure(args: argparse.Namespace, base: str, url: str) -> dict[str, Any]:
    """Warm every surface up, then measure each level; return the figures."""
    threads: list[str] = []
    limits = httpx.Limits(max_connections=max(args.clients) + 5)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        try:
            logger.info("warming up: %d runs per surface", args.warmup)
            for run in SURFACES.values():
                for _ in range(args.warmup):
                    await run(client, threads)
            levels = []
            for clients in args.clients:
                logger.info("measuring: %d runs per surface at %d clients", args.runs, clients)
                levels.append(
                    await level(
                        client, clients=clients, runs=args.runs, blocks=args.blocks, threads=threads
                    )
                )
        finally:
            logger.info("deleting %d benchmark threads", len(threads))
            await served.delete_threads(url, threads)
    one = next((lv for lv in levels if lv["clients"] == 1), None)
    return {
        "runs": args.runs,
        "warmup": args.warmup,
        "blocks": args.blocks,
        "request": REQUEST,
        "model": MODEL_SPEC,
        "levels": levels,
        "target_overhead": TARGET_OVERHEAD,
        "meets_target": one is not None
        and all(one[n]["p50_overhead"] <= TARGET_OVERHEAD for n in list(SURFACES)[1:]),
        "python": platform.python_version(),
        "uvicorn": version("uvicorn"),
        "openai_surface": "server.openai_chat, server.openai_responses",
    }


def render_table(f: dict[str, Any], out: TextIO) -> None:
    """Print the figures as a short readable report."""
    lines = [
        f"whole streamed runs, zero-latency model, {f['runs']} runs per surface and level "
        f"({f['warmup']} warm-up each), {f['blocks']} alternating blocks",
        "",
        f"{'clients':>8}  {'surface':<18}{'p50 ms':>9}{'p95 ms':>9}{'runs/s':>9}{'p50 +%':>9}",
    ]
    for lv in f["levels"]:
        for name in SURFACES:
            s = lv[name]
            extra = f"{s['p50_overhead'] * 100:>8.1f}%" if "p50_overhead" in s else f"{'':>9}"
            lines.append(
                f"{lv['clients']:>8}  {name:<18}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}"
                f"{s['runs_per_s']:>9.1f}{extra}"
            )
    verdict = "met" if f["meets_target"] else "NOT met"
    lines += [
        "",
        f"target: p50 at one client within {f['target_overhead']:.0%} of native: {verdict}",
    ]
    out.write("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.protocols",
        description="Streamed runs over the native SSE API and the OpenAI-compatible surface.",
    )
    parser.add_argument("--runs", type=int, default=200, help="measured runs per surface and level")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured runs per surface first")
    parser.add_argument("--clients", default="1,10", help="comma-separated concurrency levels")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks per level")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_database_options(parser)
    args = parser.parse_args(argv)
    try:
        args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        parser.error("--clients must be comma-separated integers")
    if not args.clients or min(args.clients) < 1:
        parser.error("--clients must list positive integers")
    if args.runs < 1 or args.warmup < 0 or not 1 <= args.blocks <= args.runs:
        parser.error("--runs at least 1, --warmup not negative, --blocks 1 to --runs")
    check_database_options(parser, args)
    return args


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    env = serving_env(args)
    proc, base = served.start(env, 1)
    try:
        return asyncio.run(measure(args, base, env["DATABASE_URL"]))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; return the exit code."""
    args = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return run_benchmark(
        lambda: _measure(args),
        render_table,
        as_json=args.json,
        logger=logger,
        passed=lambda f: bool(f["meets_target"]),
    )


if __name__ == "__main__":
    sys.exit(main())
