"""Kill the server at random moments with SIGKILL and count what survives.

A server (`bench.served`: the served app with the bench model, here slowed to `--delay`
seconds a chunk) takes `--runs` plan-mode runs at once and is killed with SIGKILL at a
random moment within their length (measured first, in a round that is not cut off). A new
server is started on the same database, every thread the kill cut off is continued
(`POST /api/v1/threads/{id}/continue.stream`) to its end, new runs start, and that server is
killed in turn: `--kills` times.

From the events each client saw before the kill, the continue's events and the thread
afterwards, it counts:

- runs cut off, and of those, runs finished after one continue (goal: all);
- finished steps lost: steps whose result a client saw before the kill that were run again
  or are missing from the finished run's report (goal 0);
- steps run twice: steps that streamed before the kill and again after. Only those under way
  at the kill (streamed, no result yet) may be; any other is counted apart (goal 0).

Run from the repository root:

    python -m bench.chaos [--kills 100] [--runs 4] [--delay 0.05] [--seed 1] [--json]
                          [--database-url URL] [--data-dir DIR]
"""

import argparse
import asyncio
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import httpx

from bench import served
from bench.common import (
    BenchmarkError,
    SseEvent,
    add_database_options,
    check_database_options,
    run_benchmark,
    serving_env,
    sse_events,
)

logger = logging.getLogger("bench.chaos")

QUESTION = "What is A? What is B? What is C? What is D?"
"""Four questions: the rule planner makes four parallel steps, then synthesis joins them."""
RUN_STREAM = "/api/v1/agent/run.stream"
UNLOCK_WAIT_S = 30.0
"""How long a killed server's thread locks may take to go (Postgres ends its sessions)."""


@dataclass
class Seen:
    """What one client saw of one run."""

    thread_id: str | None = None
    started: set[str] = field(default_factory=set)
    """Steps that streamed model output."""
    finished: set[str] = field(default_factory=set)
    """Steps whose result came."""
    final: dict[str, Any] | None = None
    error: str | None = None

    def record(self, event: SseEvent) -> None:
        data = event.data
        if event.event == "metadata":
            self.thread_id = data["thread_id"]
        elif event.event == "delta" and data.get("step_id"):
            self.started.add(str(data["step_id"]))
        elif event.event == "step_result":
            self.finished.add(str(data["result"]["step_id"]))
        elif event.event == "final":
            self.final = data
        elif event.event == "error":
            self.error = data.get("message", "")


@dataclass
class Tally:
    """The figures, summed over every kill."""

    runs: int = 0
    finished_before_kill: int = 0
    cut_off: int = 0
    never_stored: int = 0
    """Runs killed before their first checkpoint: nothing of them was kept, nothing lost."""
    finished_after_continue: int = 0
    steps_finished_before_kill: int = 0
    steps_under_way_at_kill: int = 0
    finished_steps_lost: int = 0
    steps_run_twice: int = 0
    steps_run_twice_not_under_way: int = 0
    failures: list[str] = field(default_factory=list)


async def _watch(client: httpx.AsyncClient, path: str, body: Any, seen: Seen) -> None:
    """Follow a run's event stream until it ends or the server dies."""
    try:
        async with client.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                seen.error = f"{response.status_code}: {(await response.aread()).decode()}"
                return
            async for event in sse_events(response):
                seen.record(event)
    except (httpx.TransportError, httpx.StreamError):
        pass  # the kill


def _done_steps(thread: dict[str, Any]) -> set[str]:
    report = thread.get("report") or {"steps": []}
    return {str(s["step_id"]) for s in report["steps"] if s["status"] == "done"}


async def _thread(client: httpx.AsyncClient, thread_id: str) -> dict[str, Any] | None:
    """The thread's view once the killed server's lock on it is gone (None: never stored)."""
    deadline = time.monotonic() + UNLOCK_WAIT_S
    while True:
        response = await client.get(f"/api/v1/threads/{thread_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        thread: dict[str, Any] = response.json()
        if thread["status"] != "running" or thread["can_continue"]:
            return thread
        if time.monotonic() > deadline:
            raise BenchmarkError(f"thread {thread_id} still reads as running {UNLOCK_WAIT_S} s on")
        await asyncio.sleep(0.1)


async def _settle(client: httpx.AsyncClient, before: Seen, tally: Tally) -> None:
    """Continue a run that a kill cut off, and count what its steps went through."""
    assert before.thread_id is not None
    thread = await _thread(client, before.thread_id)
    if thread is None:
        tally.never_stored += 1  # the server answered, the kill came before a checkpoint
        return
    tally.cut_off += 1
    after = Seen(thread_id=before.thread_id)
    if thread["status"] == "running":
        path = f"/api/v1/threads/{before.thread_id}/continue.stream"
        await _watch(client, path, None, after)
        thread = await _thread(client, before.thread_id)
        assert thread is not None
    if thread["status"] != "done":
        steps = (thread.get("report") or {}).get("steps", [])
        tally.failures.append(
            f"{before.thread_id}: {thread['status']} after continue "
            f"(error {after.error}, final {after.final and after.final.get('status')}, "
            f"next {thread['next']}, steps "
            f"{[(s['step_id'], s['status'], s.get('error')) for s in steps]})"
        )
        return
    tally.finished_after_continue += 1
    under_way = before.started - before.finished
    twice = before.started & after.started
    lost = (before.finished & after.started) | (before.finished - _done_steps(thread))
    tally.steps_finished_before_kill += len(before.finished)
    tally.steps_under_way_at_kill += len(under_way)
    tally.finished_steps_lost += len(lost)
    tally.steps_run_twice += len(twice)
    tally.steps_run_twice_not_under_way += len(twice - under_way)
    if lost:
        tally.failures.append(f"{before.thread_id}: finished steps lost: {sorted(lost)}")


def _body(model: str) -> dict[str, Any]:
    return {"question": QUESTION, "model": model, "approval": "never", "mode": "plan"}


async def _calibrate(base: str, runs: int, model: str) -> float:
    """How long `runs` concurrent runs take on a server nothing kills."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        seen = [Seen() for _ in range(runs)]
        started = time.perf_counter()
        await asyncio.gather(*(_watch(client, RUN_STREAM, _body(model), s) for s in seen))
        took = time.perf_counter() - started
    if any(s.final is None or s.final.get("status") != "done" for s in seen):
        raise BenchmarkError(f"a calibration run did not finish: {[s.error for s in seen]}")
    return took


async def _round(
    proc: Any, base: str, runs: int, model: str, kill_after_s: float
) -> tuple[list[Seen], float]:
    """Start `runs` runs, kill the server `kill_after_s` in; return what each client saw."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        seen = [Seen() for _ in range(runs)]
        watching = [asyncio.create_task(_watch(client, RUN_STREAM, _body(model), s)) for s in seen]
        started = time.perf_counter()
        await asyncio.sleep(kill_after_s)
        proc.kill()
        killed_at = time.perf_counter() - started
        await asyncio.to_thread(proc.wait)
        await asyncio.gather(*watching)
    return seen, killed_at


async def measure(
    env: dict[str, str], *, kills: int, runs: int, delay_s: float, seed: int
) -> dict[str, Any]:
    """Kill a server `kills` times under `runs` runs each; return the figures."""
    rng = random.Random(seed)
    model = f"bench:delay={delay_s}"
    tally = Tally()
    cut_off: list[Seen] = []
    window_s = 0.0
    kill_moments: list[float] = []
    started = time.perf_counter()
    for round_no in range(kills + 1):
        proc, base = served.start(env, workers=1)
        try:
            if round_no == 0:
                window_s = await _calibrate(base, runs, model)
                logger.info("%d runs at once take %.2f s uncut", runs, window_s)
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:
                await asyncio.gather(*(_settle(client, s, tally) for s in cut_off))
            cut_off = []
            if round_no == kills:
                break
            seen, killed_at = await _round(proc, base, runs, model, rng.uniform(0, window_s))
            kill_moments.append(killed_at)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        tally.runs += runs
        for s in seen:
            if s.thread_id is None:
                tally.never_stored += 1  # killed before the server answered
            elif s.final is not None:
                tally.finished_before_kill += 1
            else:
                cut_off.append(s)  # counted as cut off once a checkpoint of it is found
        if (round_no + 1) % 10 == 0:
            logger.info("%d kills", round_no + 1)
    return {
        "kills": kills,
        "runs_per_kill": runs,
        "model_delay_s": delay_s,
        "seed": seed,
        "uncut_round_s": round(window_s, 2),
        "median_kill_moment_s": round(sorted(kill_moments)[len(kill_moments) // 2], 2)
        if kill_moments
        else None,
        "runs": tally.runs,
        "finished_before_kill": tally.finished_before_kill,
        "cut_off": tally.cut_off,
        "never_stored": tally.never_stored,
        "finished_after_continue": tally.finished_after_continue,
        "steps_finished_before_kill": tally.steps_finished_before_kill,
        "steps_under_way_at_kill": tally.steps_under_way_at_kill,
        "finished_steps_lost": tally.finished_steps_lost,
        "steps_run_twice": tally.steps_run_twice,
        "steps_run_twice_not_under_way": tally.steps_run_twice_not_under_way,
        "failures": tally.failures,
        "took_s": round(time.perf_counter() - started, 1),
    }


def render_table(f: dict[str, Any], out: TextIO) -> None:
    """Print the figures as a short readable report."""
    lines = [
        f"agentgraph chaos: {f['kills']} SIGKILLs of the server, {f['runs_per_kill']} runs "
        f"each (4 parallel steps, model {f['model_delay_s']} s a chunk; an uncut round takes "
        f"{f['uncut_round_s']} s), seed {f['seed']}, {f['took_s']} s",
        "",
        f"runs started                     {f['runs']:>6}",
        f"  finished before the kill       {f['finished_before_kill']:>6}",
        f"  killed before any checkpoint   {f['never_stored']:>6}",
        f"  cut off                        {f['cut_off']:>6}",
        f"  cut off, finished on continue  {f['finished_after_continue']:>6}",
        f"steps finished before the kill   {f['steps_finished_before_kill']:>6}",
        f"  of them lost (run again)       {f['finished_steps_lost']:>6}",
        f"steps under way at the kill      {f['steps_under_way_at_kill']:>6}",
        f"steps run twice                  {f['steps_run_twice']:>6}",
        f"  not under way at the kill      {f['steps_run_twice_not_under_way']:>6}",
    ]
    lines += [f"FAILED: {failure}" for failure in f["failures"]]
    out.write("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="SIGKILL the server mid-run, continue every cut-off run, count the losses.",
    )
    parser.add_argument("--kills", type=int, default=100, help="times the server is killed")
    parser.add_argument("--runs", type=int, default=4, help="runs under way at each kill")
    parser.add_argument(
        "--delay", type=float, default=0.05, help="the model's seconds per streamed chunk"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill moments")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_database_options(parser)
    args = parser.parse_args(argv)
    if args.kills < 1 or args.runs < 1:
        parser.error("--kills and --runs must be at least 1")
    if not 0 <= args.delay <= 10:
        parser.error("--delay must be 0 to 10 seconds")
    check_database_options(parser, args)
    return args


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    env = serving_env(args)
    return await measure(env, kills=args.kills, runs=args.runs, delay_s=args.delay, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; return the exit code (1 if anything was
    lost or a cut-off run did not finish)."""
    args = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    code = run_benchmark(
        lambda: asyncio.run(_main(args)), render_table, as_json=args.json, logger=logger
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
