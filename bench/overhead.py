"""Measure what checkpointing costs: whole zero-latency runs on Postgres and in memory.

Each run is the full plan-and-execute graph (orchestrator, planner, two parallel reasoning
steps, the join in dispatch, critic, synthesis, finalize) driven through
`graphs.runs.stream_events`, with a chat model that answers instantly, so what is left is graph
and checkpoint overhead.

Run from the repository root:

    python -m bench.overhead [--runs 200] [--warmup 20] [--json]
                             [--database-url URL] [--data-dir DIR]

The figures and the JSON fields are described in bench/README.md.
"""

import argparse
import asyncio
import logging
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from langgraph.checkpoint.memory import InMemorySaver

from app.db import open_database
from app.pg import redact
from bench.common import (
    BenchmarkError,
    add_database_options,
    check_database_options,
    quantile,
    run_benchmark,
    settings_for,
    version,
)
from bench.zero_model import MODEL_SPEC, PLAN_STEPS, REQUEST
from bench.zero_model import register as register_zero_model
from graphs.agent import AgentGraph, compile_graph
from graphs.run_records import setup_run_records
from graphs.runs import RunEvent, new_thread_id, stream_events, thread_config
from nodes.context import Context

logger = logging.getLogger("bench.overhead")

TARGET_RATIO = 2.0
"""Postgres p50 over in-memory p50 should stay at or below this."""
TARGET_P50_MS = 30.0
"""A whole zero-latency run on Postgres should take less than this, at the median."""


@dataclass(frozen=True)
class Timings:
    """Wall times of the measured runs of one saver, in milliseconds."""

    samples: list[float]

    @property
    def p50(self) -> float:
        """Median run time."""
        return quantile(self.samples, 50)

    @property
    def p95(self) -> float:
        """95th-percentile run time."""
        return quantile(self.samples, 95)


async def run_once(graph: AgentGraph, context: Context) -> tuple[float, str, RunEvent]:
    """Run one fresh thread to its end; return its wall time in ms, its id and `final` event.

    Raises:
        BenchmarkError: the run reported an error or did not finish as `done`.
    """
    thread_id = new_thread_id()
    final: RunEvent | None = None
    started = time.perf_counter()
    async for event in stream_events(graph, thread_id=thread_id, context=context, request=REQUEST):
        if event["event"] == "error":
            raise BenchmarkError(f"run {thread_id} failed: {event['type']}: {event['message']}")
        if event["event"] == "final":
            final = event
    elapsed_ms = (time.perf_counter() - started) * 1000
    if final is None or final["status"] != "done":
        raise BenchmarkError(f"run {thread_id} ended without a done `final` event: {final}")
    return elapsed_ms, thread_id, final


def check_shape(final: RunEvent) -> None:
    """Make sure the measured run is the multi-node one this benchmark means to time.

    Raises:
        BenchmarkError: the plan, the steps or the model calls are not as expected.
    """
    report = final["report"]
    steps = report["steps"]
    synthesize = report["nodes"].get("synthesize", {})
    if (
        len(steps) != PLAN_STEPS
        or any(s["status"] != "done" for s in steps)
        or report["replans"] != 0
        or synthesize.get("output_tokens", 0) == 0
    ):
        raise BenchmarkError(
            f"unexpected run shape: steps={steps}, replans={report['replans']}, "
            f"synthesize={synthesize}"
        )


async def count_checkpoints(graph: AgentGraph, thread_id: str) -> tuple[int, int]:
    """Return (super-steps, checkpoints) of a finished thread.

    The loop writes one checkpoint for the input (step -1) and one after each super-step
    (steps 0..n, the first being `__start__`), so super-steps = checkpoints - 1.
    """
    steps = [
        snap.metadata.get("step", 0) if snap.metadata else 0
        async for snap in graph.aget_state_history(thread_config(thread_id))
    ]
    return max(steps) + 1, len(steps)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the warm-up and the measured runs on both savers and return the figures."""
    register_zero_model()
    settings = settings_for(args)
    context = Context(model=MODEL_SPEC, approval="never", mode="plan")
    memory_graph = compile_graph(
        InMemorySaver(),
        step_timeout_s=settings.step_timeout_s,
        step_attempts=settings.step_attempts,
    )
    external = bool(args.database_url or settings.database_url)
    logger.info("opening %s Postgres", "external" if external else "embedded")
    opened = time.perf_counter()
    async with open_database(settings, url=args.database_url) as db:
        await setup_run_records(db.pool)  # every run's events are kept, for replay
        setup_ms = (time.perf_counter() - opened) * 1000
        database_url = redact(db.url)
        postgres_graph = compile_graph(
            db.saver, step_timeout_s=settings.step_timeout_s, step_attempts=settings.step_attempts
        )
        graphs = {"memory": memory_graph, "postgres": postgres_graph}
        samples: dict[str, list[float]] = {"memory": [], "postgres": []}
        threads: dict[str, list[str]] = {"memory": [], "postgres": []}

        async def timed(name: str) -> float:
            elapsed_ms, thread_id, final = await run_once(graphs[name], context)
            threads[name].append(thread_id)
            if len(threads[name]) == 1:
                check_shape(final)
            return elapsed_ms

        try:
            logger.info("warming up: %d runs per saver", args.warmup)
            for _ in range(args.warmup):
                for name in graphs:
                    await timed(name)
            logger.info("measuring: %d runs per saver, interleaved", args.runs)
            for i in range(args.runs):
                # Alternate which saver goes first, so neither always follows the other.
                order = ("memory", "postgres") if i % 2 == 0 else ("postgres", "memory")
                for name in order:
                    samples[name].append(await timed(name))
            counts = {
                name: await count_checkpoints(graphs[name], threads[name][-1]) for name in graphs
            }
        finally:
            # The benchmark's threads would otherwise crowd the user's thread list.
            logger.info("deleting %d benchmark threads", len(threads["postgres"]))
            for thread_id in threads["postgres"]:
                await db.saver.adelete_thread(thread_id)
            async with db.pool.connection() as conn:
                await conn.execute(
                    "DELETE FROM agentgraph_run_records WHERE thread_id = ANY(%s)",
                    (threads["postgres"],),
                )
    if counts["memory"] != counts["postgres"]:
        raise BenchmarkError(f"the savers saw different super-steps: {counts}")
    super_steps, checkpoints = counts["postgres"]

    memory, postgres = Timings(samples["memory"]), Timings(samples["postgres"])
    ratio_p50 = postgres.p50 / memory.p50
    return {
        "runs": args.runs,
        "warmup": args.warmup,
        "request": REQUEST,
        "plan_steps": PLAN_STEPS,
        "super_steps": super_steps,
        "checkpoints_per_run": checkpoints,
        "database": "external" if external else "embedded",
        "database_url": database_url,
        "database_setup_ms": round(setup_ms, 1),
        "memory_p50_ms": round(memory.p50, 3),
        "memory_p95_ms": round(memory.p95, 3),
        "memory_mean_ms": round(statistics.fmean(memory.samples), 3),
        "memory_ms_per_super_step": round(memory.p50 / super_steps, 3),
        "postgres_p50_ms": round(postgres.p50, 3),
        "postgres_p95_ms": round(postgres.p95, 3),
        "postgres_mean_ms": round(statistics.fmean(postgres.samples), 3),
        "postgres_ms_per_super_step": round(postgres.p50 / super_steps, 3),
        "ratio_p50": round(ratio_p50, 3),
        "ratio_p95": round(postgres.p95 / memory.p95, 3),
        "target_ratio": TARGET_RATIO,
        "target_p50_ms": TARGET_P50_MS,
        "meets_ratio_target": ratio_p50 <= TARGET_RATIO,
        "meets_p50_target": postgres.p50 < TARGET_P50_MS,
        "python": platform.python_version(),
        "langgraph": version("langgraph"),
        "langgraph_checkpoint_postgres": version("langgraph-checkpoint-postgres"),
    }


def render_table(figures: dict[str, Any], out: TextIO) -> None:
    """Print the figures as a short readable report."""

    def ok(passed: bool) -> str:
        return "PASS" if passed else "MISS"

    f = figures
    lines = [
        f"agentgraph checkpoint overhead: {f['runs']} runs per saver "
        f"({f['warmup']} warm-up), zero-latency model",
        f"request: {f['request']!r} ({f['plan_steps']} parallel steps + synthesis)",
        f"super-steps per run: {f['super_steps']} "
        f"(checkpoints written per run: {f['checkpoints_per_run']})",
        f"postgres: {f['database']} {f['database_url']} "
        f"(opened in {f['database_setup_ms']:.0f} ms)",
        "",
        f"{'saver':<18}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}{'ms/super-step':>16}",
        f"{'in-memory':<18}{f['memory_p50_ms']:>10.2f}{f['memory_p95_ms']:>10.2f}"
        f"{f['memory_mean_ms']:>10.2f}{f['memory_ms_per_super_step']:>16.3f}",
        f"{'postgres':<18}{f['postgres_p50_ms']:>10.2f}{f['postgres_p95_ms']:>10.2f}"
        f"{f['postgres_mean_ms']:>10.2f}{f['postgres_ms_per_super_step']:>16.3f}",
        f"{'ratio pg/memory':<18}{f['ratio_p50']:>9.2f}x{f['ratio_p95']:>9.2f}x",
        "",
        f"target: postgres p50 <= {f['target_ratio']:g}x in-memory p50: "
        f"{ok(f['meets_ratio_target'])} ({f['ratio_p50']:.2f}x)",
        f"target: postgres p50 < {f['target_p50_ms']:g} ms per run: "
        f"{ok(f['meets_p50_target'])} ({f['postgres_p50_ms']:.2f} ms)",
    ]
    out.write("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description="Whole zero-latency runs of the agent graph: Postgres saver vs in-memory.",
    )
    parser.add_argument("--runs", type=int, default=200, help="measured runs per saver")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured runs per saver first")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_database_options(parser)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
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
