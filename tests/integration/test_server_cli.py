"""`agentgraph serve` as its own process (one or several workers): ready, serving, and
stopping cleanly on SIGTERM. Several workers run under uvicorn's process manager; these tests
hold what the product promises of it, and the event-loop watchdog that is the project's own."""

import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.common import free_port, wait_ready
from tests.fakes import scripted_spec
from tests.integration.conftest import REPO, Cli
from tests.integration.server_harness import SseEvent, open_run_stream, sse_events
from tests.integration.startable_app import FAIL_START

DEADLINE_S = 90.0


def _serve(
    cli: Cli, port: int, *options: str, env: dict[str, str] | None = None
) -> tuple["subprocess.Popen[str]", str]:
    """`agentgraph serve` on 127.0.0.1:`port` in a process of its own (`env` laid over the
    CLI's), once it is ready; return the process and its base URL."""
    proc = cli.start("serve", "--host", "127.0.0.1", "--port", str(port), *options, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(
        proc,
        f"{base}/readyz",
        timeout_s=120,
        name="the server",
        output=lambda: proc.communicate()[0],
    )
    return proc, base


def _interrupted_run(base: str, headers: dict[str, str] | None = None) -> None:
    """A quick real run: the rule planner and the approval gate need no model call, so it
    stops at the plan's approval."""
    result = httpx.post(
        f"{base}/api/v1/agent/run",
        json={"question": "What is A? What is B?", "approval": "always"},
        headers=headers,
        timeout=60,
    ).json()
    assert result["status"] == "interrupted", result
    assert result["pending_approval"]["gate"] == "plan"


def _workers(parent: int) -> set[int]:
    """The parent's living worker processes (not multiprocessing's resource tracker, nor a
    child that has exited and is not yet reaped)."""
    workers = set()
    for child in psutil.Process(parent).children():
        with contextlib.suppress(psutil.ZombieProcess, psutil.NoSuchProcess):
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if "resource_tracker" not in " ".join(child.cmdline()):
                workers.add(child.pid)
    return workers


def _until(condition: Callable[[], bool], what: str, *, output: Callable[[], str]) -> None:
    """Poll `condition` until it holds; fail, saying `what`, after `DEADLINE_S`."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}; {output()}"
        time.sleep(0.1)


def _stop(proc: "subprocess.Popen[str]") -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    return output


def test_agentgraph_serve_runs_and_stops_on_sigterm(cli: Cli) -> None:
    port = free_port()
    proc, base = _serve(cli, port)
    try:
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        _interrupted_run(base)
    finally:
        output = _stop(proc)
    # uvicorn shuts down cleanly, then re-raises the signal so the exit status reports it.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output


@contextlib.contextmanager
def _scripted_workers(
    scripted_cli: Cli, log: Path, *, timeout_s: float = 60
) -> Iterator[tuple["subprocess.Popen[bytes]", str]]:
    """Two workers serving the app with the scripted models (`scripted_agentgraph workers`),
    as `serve --workers 2 --worker-timeout TIMEOUT_S` runs them; output in `log`."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", scripted_cli.module, "workers", str(port), "2", str(timeout_s)],
            cwd=REPO,
            env=scripted_cli.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, f"{base}/readyz", timeout_s=120, name="the server", output=log.read_text)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


async def test_agentgraph_serve_workers_share_the_port_and_end_streams_on_sigterm(
    scripted_cli: Cli, tmp_path: Path
) -> None:
    """Two worker processes serve one port; SIGTERM to the parent ends an in-flight stream
    with the stopping `error` event, and both workers shut down cleanly."""
    log = tmp_path / "log"
    events: list[SseEvent] = []
    # A run held in its model call (the gate never opens): it is surely running at SIGTERM.
    held = scripted_spec(reply="Never said.", gate_file=str(tmp_path / "never"))
    with _scripted_workers(scripted_cli, log) as (proc, base):
        assert len(_workers(proc.pid)) == 2
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            body = {"question": "What is A?", "model": held, "approval": "never"}
            async with open_run_stream(client, body) as response:
                async for event in sse_events(response):
                    events.append(event)
                    if event.event == "handoff" and event.data.get("target") == "reasoning":
                        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    output = log.read_text()
    assert events[0].event == "metadata"
    assert events[-1].event == "error", events[-1]
    assert "server is stopping" in events[-1].data["message"]
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert output.count("Application shutdown complete") == 2, output


def test_a_worker_that_dies_is_replaced_and_the_port_keeps_serving(cli: Cli) -> None:
    port = free_port()
    proc, base = _serve(cli, port, "--workers", "2")
    try:
        first = _workers(proc.pid)
        assert len(first) == 2
        killed = min(first)
        psutil.Process(killed).kill()
        # Every new connection meanwhile is served, by the other worker.
        for _ in range(5):
            assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
        _until(
            lambda: killed not in (now := _workers(proc.pid)) and len(now) == 2,
            "no new worker replaced the killed one",
            output=lambda: str(_workers(proc.pid)),
        )
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
    finally:
        output = _stop(proc)
    assert proc.returncode == 0, output
    assert f"Child process [{killed}] died" in output


def test_workers_that_cannot_start_stop_the_server_with_an_error(cli: Cli) -> None:
    """A worker whose app cannot start is not started again and again: the server exits."""
    nothing_listens = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    proc = cli.start(
        "serve",
        "--port",
        str(free_port()),
        "--workers",
        "2",
        env={"DATABASE_URL": nothing_listens},
    )
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    assert "error: a server worker process could not start its app" in output
    assert "cannot reach Postgres" in output


def test_workers_on_a_port_in_use_say_so(cli: Cli) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = cli.run("serve", "--port", str(port), "--workers", "2", timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr


def test_sighup_replaces_the_workers_and_the_port_keeps_answering(cli: Cli) -> None:
    """Each new worker is ready before an old one stops. uvicorn closes, as a worker stops,
    connections with no request under way, so a connection that the stopping worker took in
    that instant may be reset before its request is read: at most one per retired worker, one
    client connecting after another. Every other request is answered 200."""
    port = free_port()
    proc, base = _serve(cli, port, "--workers", "2")
    failures: list[str] = []
    resets = answered = 0
    try:
        old = _workers(proc.pid)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + DEADLINE_S
        while (now := _workers(proc.pid)) & old or len(now) != 2:
            assert time.monotonic() < deadline, (old, now)
            try:  # a new connection each time
                answer = httpx.get(f"{base}/healthz", timeout=30)
                answered += 1
                if answer.status_code != 200:
                    failures.append(f"status {answer.status_code}")
            except (httpx.ReadError, httpx.RemoteProtocolError):
                resets += 1
            except httpx.TransportError as exc:
                failures.append(repr(exc))  # refused, or timed out: the port stopped answering
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
    finally:
        output = _stop(proc)
    assert failures == [], failures
    assert resets <= len(old), (resets, answered)
    assert answered > 0
    assert proc.returncode == 0, output
    assert output.count("Application shutdown complete") == 4, output


def test_sighup_keeps_the_workers_when_new_ones_cannot_start(tmp_path: Path) -> None:
    port, fail, log = free_port(), tmp_path / "fail", tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.startable_app", str(port), "2"],
            cwd=REPO,
            env={**os.environ, FAIL_START: str(fail)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, f"{base}/readyz", timeout_s=60, name="the server", output=log.read_text)
        # One worker answering is not both started: told to fail before the second one's
        # start-up, the second would fail then, not at the restart.
        _until(
            lambda: log.read_text().count("Application startup complete.") == 2,
            "the two workers did not start",
            output=log.read_text,
        )
        old = _workers(proc.pid)
        fail.touch()
        proc.send_signal(signal.SIGHUP)
        # The first new worker fails to start: the restart stops there, the old ones serve on.
        _until(
            lambda: "keeping worker" in log.read_text(),
            "the failed restart was not reported",
            output=log.read_text,
        )
        assert _workers(proc.pid) == old, log.read_text()
        pids = {httpx.get(f"{base}/readyz", timeout=10).json()["pid"] for _ in range(8)}
        assert pids <= old
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()


def test_a_stopped_worker_is_killed_and_replaced(cli: Cli) -> None:
    """A worker that answers nothing at all (here SIGSTOPped) fails uvicorn's health check."""
    proc, base = _serve(cli, free_port(), "--workers", "2", "--worker-timeout", "2")
    try:
        workers = _workers(proc.pid)
        stopped = min(workers)
        os.kill(stopped, signal.SIGSTOP)
        _until(
            lambda: stopped not in (now := _workers(proc.pid)) and len(now) == 2,
            "the stopped worker was not replaced",
            output=lambda: str(_workers(proc.pid)),
        )
        for _ in range(4):
            assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
    finally:
        output = _stop(proc)
    assert proc.returncode == 0, output
    assert f"Child process [{stopped}] died" in output


def test_a_worker_whose_event_loop_is_stuck_exits_and_is_replaced(
    scripted_cli: Cli, tmp_path: Path
) -> None:
    """A blocking call in async code holds the loop, not the thread that answers uvicorn's
    health check: the worker's watchdog ends it, and uvicorn starts another. The thread of
    the run it held is left to continue."""
    log = tmp_path / "log"
    with _scripted_workers(scripted_cli, log, timeout_s=2) as (proc, base):
        before = _workers(proc.pid)
        stuck_model = scripted_spec(reply="Never said.", block_s=600)
        body = {"question": "What is A?", "model": stuck_model, "approval": "never"}
        started: list[str] = []

        def run_on_the_stuck_model() -> None:
            url = f"{base}/api/v1/agent/run.stream"
            with (
                contextlib.suppress(httpx.TransportError),
                httpx.stream("POST", url, json=body, timeout=120) as r,
            ):
                for line in r.iter_lines():
                    if line.startswith("data:") and "thread_id" in line and not started:
                        started.append(line)

        client = threading.Thread(target=run_on_the_stuck_model, daemon=True)
        client.start()
        _until(
            lambda: "has been stuck" in log.read_text(),
            "the watchdog did not end the stuck worker",
            output=log.read_text,
        )
        _until(
            lambda: len((now := _workers(proc.pid)) - before) == 1 and len(now) == 2,
            "no new worker replaced the stuck one",
            output=log.read_text,
        )
        for _ in range(4):
            assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
        client.join(timeout=60)
        assert started, log.read_text()  # the run had begun before its worker's loop stuck
        thread_id = json.loads(started[0].removeprefix("data:"))["thread_id"]
        thread = httpx.get(f"{base}/api/v1/threads/{thread_id}", timeout=30).json()
        assert thread["can_continue"] is True, thread
    text = log.read_text()
    assert proc.returncode == 0, text
    assert text.count("has been stuck") == 1, text


def test_sigttin_adds_a_worker_and_sigttou_removes_one_but_never_the_last(cli: Cli) -> None:
    port = free_port()
    proc, base = _serve(cli, port, "--workers", "2")
    try:
        proc.send_signal(signal.SIGTTIN)
        _until(
            lambda: len(_workers(proc.pid)) == 3,
            "SIGTTIN added no worker",
            output=lambda: str(_workers(proc.pid)),
        )
        for expected in (2, 1):
            proc.send_signal(signal.SIGTTOU)
            _until(
                lambda n=expected: len(_workers(proc.pid)) == n,
                f"SIGTTOU did not leave {expected} workers",
                output=lambda: str(_workers(proc.pid)),
            )
        proc.send_signal(signal.SIGTTOU)  # one worker left: it stays
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
    finally:
        output = _stop(proc)
    assert proc.returncode == 0, output
    assert "Already reached one process" in output, output


def _runs_started(base: str) -> float:
    """`agentgraph_runs_started_total{kind="request"}` in one scrape, on a new connection."""
    text = httpx.get(f"{base}/metrics", headers={"Connection": "close"}, timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "agentgraph_runs_started_total" and sample.labels == {
                "kind": "request"
            }:
                return sample.value
    return 0.0


def test_metrics_of_several_workers_add_up_whichever_answers(
    scripted_cli: Cli, tmp_path: Path
) -> None:
    """Runs served by either of two workers are all counted by a scrape of either."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"an earlier server's")
    cli = copy.copy(scripted_cli)
    cli.env = {**scripted_cli.env, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    with _scripted_workers(cli, tmp_path / "log") as (proc, base):
        assert not (shared / "counter_1.db").exists()
        workers = _workers(proc.pid)
        assert len(workers) == 2
        runs = 0
        deadline = time.monotonic() + DEADLINE_S
        # Each run on a new connection, until both workers have counted some: the kernel
        # hands each connection to whichever worker accepts it first, and the second may
        # still be starting.
        while {p for p in workers if (shared / f"counter_{p}.db").exists()} != workers:
            assert time.monotonic() < deadline, f"one worker served all {runs} runs"
            _interrupted_run(base, headers={"Connection": "close"})
            runs += 1
            time.sleep(0.1)
        assert [_runs_started(base) for _ in range(10)] == [runs] * 10


def test_one_process_in_a_named_metrics_directory_counts_from_zero(
    cli: Cli, tmp_path: Path
) -> None:
    """With `PROMETHEUS_MULTIPROC_DIR` set, a one-process server empties it of an earlier
    server's files, then counts its own runs there."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"an earlier server's")
    proc, base = _serve(cli, free_port(), env={"PROMETHEUS_MULTIPROC_DIR": str(shared)})
    try:
        assert not (shared / "counter_1.db").exists()
        _interrupted_run(base)
        assert _runs_started(base) == 1
        assert (shared / f"counter_{proc.pid}.db").exists()
    finally:
        _stop(proc)
