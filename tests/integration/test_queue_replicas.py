"""Two API replicas and two queue workers, each its own process, on one Postgres: a background
run started on replica A is streamed from replica B while worker 1 executes it; worker 1 is
killed with SIGKILL mid-run, worker 2 takes the run again from its last checkpoint, and no
step that had finished runs again."""

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.pg import resolve_database_url
from app.settings import Settings
from bench.background import start_api, start_worker, stop, wait_for_workers
from bench.common import free_port
from tests.integration.conftest import Cli
from tests.integration.server_harness import SseEvent, sse_events, wait_for

QUESTION = "What is A? What is B? What is C? What is D?"
STEPS = {"s1", "s2", "s3", "s4"}


@pytest.fixture
def own_database(settings: Settings) -> Iterator[str]:
    """A database of its own: no other test's server or worker takes its jobs."""
    admin = resolve_database_url(settings)
    name = f"agentgraph_queue_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(admin)
    info["dbname"] = name
    yield psycopg.conninfo.make_conninfo("", **info)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_run_survives_its_worker_killed_and_streams_on_another_replica(
    cli: Cli, own_database: str, tmp_path: Path
) -> None:
    env = {
        **cli.env,
        "DATABASE_URL": own_database,
        "AGENTGRAPH_WORKER_HEARTBEAT_S": "0.5",
        "AGENTGRAPH_WORKER_STALLED_S": "2",
    }
    procs: list[Any] = []
    logs = [(tmp_path / f"worker{n}.log").open("w") for n in (1, 2)]
    try:
        replica_a, base_a = start_api(env, execute=False)
        procs.append(replica_a)
        replica_b, base_b = start_api(env, execute=False)
        procs.append(replica_b)
        workers = {}
        metrics_port = {}
        for log in logs:
            port = free_port()
            worker = start_worker({**env, "AGENTGRAPH_WORKER_METRICS_PORT": str(port)}, log=log)
            procs.append(worker)
            workers[worker.pid] = worker
            metrics_port[worker.pid] = port
        await wait_for_workers(own_database, 2)

        async with (
            httpx.AsyncClient(base_url=base_a, timeout=60) as a,
            httpx.AsyncClient(base_url=base_b, timeout=60) as b,
        ):
            body = {
                "question": QUESTION,
                "model": "bench:delay=0.5",
                "approval": "never",
                "mode": "plan",
            }
            posted = await a.post("/api/v1/runs", json=body)
            assert posted.status_code == 202, posted.text
            run = posted.json()
            run_path = run["stream_url"].removesuffix("/stream")

            seen: list[SseEvent] = []
            finished = asyncio.Event()

            async def watch() -> None:
                async with b.stream("GET", run["stream_url"]) as response:
                    assert response.status_code == 200
                    async for event in sse_events(response):
                        seen.append(event)
                        if event.event == "step_result":
                            finished.set()

            watching = asyncio.create_task(watch())
            await asyncio.wait_for(finished.wait(), 60)
            taken = (await b.get(run_path)).json()
            victim = int(taken["worker"].rsplit(":", 1)[1])
            assert victim in workers, (taken, list(workers))
            os.kill(victim, signal.SIGKILL)
            workers[victim].wait()
            killed_at = int(seen[-1].id or 0)
            finished_before = {
                e.data["result"]["step_id"]
                for e in seen
                if e.event == "step_result" and int(e.id or 0) <= killed_at
            }

            await asyncio.wait_for(watching, 90)

            names = [e.event for e in seen]
            assert names[-1] == "final", names
            assert seen[-1].data["status"] == "done"
            ended = (await a.get(run_path)).json()
            assert ended["status"] == "done"
            assert ended["attempts"] == 2
            assert ended["worker"] != taken["worker"]
            # The worker that finished the run counted it, on its own metrics port.
            survivor = int(ended["worker"].rsplit(":", 1)[1])
            scraped = (await a.get(f"http://127.0.0.1:{metrics_port[survivor]}/metrics")).text
            counted = {
                s.labels["status"]: s.value
                for f in text_string_to_metric_families(scraped)
                for s in f.samples
                if s.name == "agentgraph_runs_finished_total"
            }
            assert counted == {"done": 1.0}, scraped

            # No step that finished before the kill ran again: none of its tokens came after.
            assert finished_before
            again = {
                e.data.get("step_id")
                for e in seen
                if e.event == "delta" and int(e.id or 0) > killed_at
            }
            assert not (again & finished_before), (again, finished_before)
            results = [e.data["result"]["step_id"] for e in seen if e.event == "step_result"]
            assert sorted(results) == sorted(STEPS)

            # A late join on replica A reads the same log, first event to last.
            async with a.stream("GET", run["stream_url"]) as response:
                late = [e async for e in sse_events(response)]
            assert [e.id for e in late] == [e.id for e in seen]

            thread = (await b.get(f"/api/v1/threads/{run['thread_id']}")).json()
            assert thread["status"] == "done"
            assert {s["step_id"] for s in thread["report"]["steps"]} == STEPS

            async def queue_empty() -> bool:
                listed = (await a.get("/api/v1/runs", params={"status": "running"})).json()
                return not listed

            await wait_for(queue_empty, within_s=10)
    finally:
        stop(procs)
        for log in logs:
            log.close()


def test_a_worker_says_when_its_metrics_port_is_taken(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli.run("worker", "--metrics-port", str(port), timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"error: cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
