"""Measure what pruning saves: checkpoint storage per 1,000 runs before and after.

Runs whole zero-latency runs of the agent graph (`bench.overhead.run_once`) on a database of
their own inside the cluster, forks a share of the threads (a branch that pruning must keep),
then prunes everything older than now with `graphs.retention.prune`, as
`agentgraph threads prune --older-than 0s` would. Reports the rows and the bytes of the three
checkpoint tables (after `VACUUM FULL`, so that freed space is counted as freed) per 1,000
runs, and how long pruning took. Every thread's latest checkpoint is then loaded again, to
check that nothing it needs went.

Run from the repository root:

    python -m bench.retention [--runs 1000] [--fork-every 10] [--json]
                              [--database-url URL] [--data-dir DIR]
"""

import argparse
import asyncio
import logging
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import psycopg
from psycopg.conninfo import make_conninfo

from app.db import open_database
from bench.common import (
    BenchmarkError,
    add_database_options,
    check_database_options,
    run_benchmark,
    settings_for,
)
from bench.overhead import run_once
from bench.zero_model import MODEL_SPEC
from bench.zero_model import register as register_zero_model
from graphs.agent import compile_graph
from graphs.retention import prune
from graphs.runs import thread_config
from graphs.threads import fork, history
from nodes.context import Context

logger = logging.getLogger("bench.retention")

TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


async def _sizes(url: str) -> dict[str, dict[str, int]]:
    """Rows and bytes (table, indexes and TOAST) of each checkpoint table, after VACUUM FULL."""
    sizes: dict[str, dict[str, int]] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for table in TABLES:
            await conn.execute(f"VACUUM FULL {table}")
            cursor = await conn.execute(
                f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}"
            )
            row = await cursor.fetchone()
            assert row is not None
            sizes[table] = {"rows": int(row[0]), "bytes": int(row[1])}
    return sizes


def _per_1000(sizes: dict[str, dict[str, int]], runs: int) -> dict[str, float]:
    total_bytes = sum(s["bytes"] for s in sizes.values())
    return {
        "checkpoints": round(sizes["checkpoints"]["rows"] * 1000 / runs, 1),
        "blobs": round(sizes["checkpoint_blobs"]["rows"] * 1000 / runs, 1),
        "writes": round(sizes["checkpoint_writes"]["rows"] * 1000 / runs, 1),
        "mib": round(total_bytes * 1000 / runs / 2**20, 2),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run, fork, prune; return the figures."""
    register_zero_model()
    settings = settings_for(args)
    context = Context(model=MODEL_SPEC, approval="never", mode="plan")
    name = f"bench_retention_{uuid.uuid4().hex[:8]}"
    async with open_database(settings, url=args.database_url) as home:
        home_url = home.url
        async with home.pool.connection() as conn:
            await conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(home_url, dbname=name)
    try:
        async with open_database(settings, url=url) as db:
            graph = compile_graph(
                db.saver,
                step_timeout_s=settings.step_timeout_s,
                step_attempts=settings.step_attempts,
            )
            threads: list[str] = []
            started = time.perf_counter()
            for i in range(args.runs):
                _, thread_id, _ = await run_once(graph, context)
                threads.append(thread_id)
                if args.fork_every and i % args.fork_every == 0:
                    items = await history(graph, thread_id)
                    at = next(c for c in items if c["next"] == ["synthesize"])
                    await fork(
                        graph,
                        thread_id,
                        at["checkpoint_id"],
                        {"answer": "A forked answer."},
                        as_node="synthesize",
                    )
                if (i + 1) % 200 == 0:
                    logger.info("%d runs", i + 1)
            run_s = time.perf_counter() - started
            heads = {t: (await graph.aget_state(thread_config(t))).values for t in threads}
            before = await _sizes(url)
            pruned_at = time.perf_counter()
            report = await prune(db.pool, cutoff=datetime.now(UTC))
            prune_s = time.perf_counter() - pruned_at
            after = await _sizes(url)
            for t in threads:
                if (await graph.aget_state(thread_config(t))).values != heads[t]:
                    raise BenchmarkError(f"thread {t} lost state its latest checkpoint needs")
    finally:
        async with (
            open_database(settings, url=args.database_url) as home,
            home.pool.connection() as conn,
        ):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    saved = 1 - sum(s["bytes"] for s in after.values()) / sum(s["bytes"] for s in before.values())
    return {
        "runs": args.runs,
        "forked_threads": len(range(0, args.runs, args.fork_every)) if args.fork_every else 0,
        "run_s": round(run_s, 1),
        "before": before,
        "after": after,
        "before_per_1000_runs": _per_1000(before, args.runs),
        "after_per_1000_runs": _per_1000(after, args.runs),
        "bytes_saved_fraction": round(saved, 3),
        "prune_s": round(prune_s, 2),
        "prune_threads_per_s": round(report.threads_seen / prune_s, 1) if prune_s else None,
        "checkpoints_deleted": report.checkpoints_deleted,
        "checkpoints_kept": report.checkpoints_kept,
        "blobs_deleted": report.blobs_deleted,
        "writes_deleted": report.writes_deleted,
        "heads_intact": True,
    }


def render_table(f: dict[str, Any], out: TextIO) -> None:
    """Print the figures as a short readable report."""
    b, a = f["before_per_1000_runs"], f["after_per_1000_runs"]
    lines = [
        f"agentgraph checkpoint retention: {f['runs']} zero-latency runs "
        f"({f['forked_threads']} forked), pruned of everything older than now",
        "",
        f"{'per 1,000 runs':<16}{'checkpoints':>13}{'blobs':>10}{'writes':>10}{'MiB':>9}",
        f"{'before':<16}{b['checkpoints']:>13.0f}{b['blobs']:>10.0f}{b['writes']:>10.0f}"
        f"{b['mib']:>9.2f}",
        f"{'after':<16}{a['checkpoints']:>13.0f}{a['blobs']:>10.0f}{a['writes']:>10.0f}"
        f"{a['mib']:>9.2f}",
        "",
        f"space saved: {f['bytes_saved_fraction']:.1%}; pruning took {f['prune_s']:.2f} s "
        f"({f['prune_threads_per_s']} threads/s); every thread's latest state intact",
    ]
    out.write("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.retention",
        description="Checkpoint storage per 1,000 runs before and after pruning.",
    )
    parser.add_argument("--runs", type=int, default=1000, help="runs (one thread each)")
    parser.add_argument(
        "--fork-every", type=int, default=10, help="fork every Nth thread (0: never)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_database_options(parser)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.fork_every < 0:
        parser.error("--fork-every must not be negative")
    check_database_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; return the exit code."""
    args = parse_args(argv)
    return run_benchmark(
        lambda: asyncio.run(measure(args)), render_table, as_json=args.json, logger=logger
    )


if __name__ == "__main__":
    sys.exit(main())
