"""`agentgraph serve` as its own process (one or several workers): ready, serving, and
stopping cleanly on SIGTERM."""

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.integration.conftest import REPO, Cli, _free_port, wait_ready
from tests.integration.server_harness import SseEvent, open_run_stream, sse_events
from tests.integration.startable_app import FAIL_START


def _serve(cli: Cli, port: int, *options: str) -> tuple["subprocess.Popen[str]", str]:
    """`agentgraph serve` on 127.0.0.1:`port` in a process of its own, once it is ready;
    return the process and its base URL."""
    proc = cli.start("serve", "--host", "127.0.0.1", "--port", str(port), *options)
    base = f"http://127.0.0.1:{port}"
    wait_ready(
        proc,
        f"{base}/readyz",
        timeout=120,
        name="the server",
        output=lambda: proc.communicate()[0],
    )
    return proc, base


def _living(supervisor: int) -> list[psutil.Process]:
    """The supervisor and its children, but a child that has exited and is not yet reaped."""
    parent = psutil.Process(supervisor)
    living = [parent]
    for child in parent.children():
        with contextlib.suppress(psutil.ZombieProcess, psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE:
                living.append(child)
    return living


def _connections_by_process(supervisor: int, port: int) -> dict[int, int]:
    """How many open connections to `port` the supervisor and each of its children hold."""
    held: dict[int, int] = {}
    for process in _living(supervisor):
        with contextlib.suppress(psutil.ZombieProcess, psutil.NoSuchProcess):
            held[process.pid] = sum(
                1
                for c in process.net_connections(kind="tcp")
                if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
            )
    return held


def _workers(supervisor: int) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    workers = set()
    for process in _living(supervisor)[1:]:
        with contextlib.suppress(psutil.ZombieProcess, psutil.NoSuchProcess):
            if "resource_tracker" not in " ".join(process.cmdline()):
                workers.add(process.pid)
    return workers


def _connect_until_a_new_worker_serves(supervisor: int, port: int, known: set[int]) -> None:
    """Open new connections, each served, until a worker not in `known` holds one."""
    clients: list[httpx.Client] = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            clients.append(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60))
            assert clients[-1].get("/healthz").status_code == 200
            held = _connections_by_process(supervisor, port)
            if {pid for pid, n in held.items() if n} - known:
                return
            time.sleep(0.2)
    finally:
        for client in clients:
            client.close()
    raise AssertionError(f"no new worker served a connection: {held}")


def _serve_with_a_stopped_worker(
    cli: Cli, *options: str, idle_s: float = 0.0
) -> tuple["subprocess.Popen[str]", str, int]:
    """Two workers, one of them stopped (SIGSTOP) after `idle_s`: the process, its base URL
    and the stopped worker's pid."""
    proc, base = _serve(cli, _free_port(), "--workers", "2", *options)
    workers = _workers(proc.pid)
    time.sleep(idle_s)
    assert _workers(proc.pid) == workers  # none was restarted meanwhile
    stopped = min(workers)
    os.kill(stopped, signal.SIGSTOP)
    return proc, base, stopped


def test_agentgraph_serve_runs_and_stops_on_sigterm(cli: Cli) -> None:
    port = _free_port()
    proc, base = _serve(cli, port)
    try:
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        # The rule planner and the approval gate need no model call: a quick real run.
        result = httpx.post(
            f"{base}/api/v1/agent/run",
            json={"question": "What is A? What is B?", "approval": "always"},
            timeout=60,
        ).json()
        assert result["status"] == "interrupted"
        assert result["pending_approval"]["gate"] == "plan"
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    # uvicorn shuts down cleanly, then re-raises the signal so the exit status reports it.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output


async def test_agentgraph_serve_workers_share_the_port_and_end_streams_on_sigterm(
    cli: Cli,
) -> None:
    """Two worker processes serve one port; SIGTERM to the supervisor ends an in-flight
    stream with the stopping `error` event, and both workers shut down cleanly."""
    port = _free_port()
    proc, base = _serve(cli, port, "--workers", "2")
    events: list[SseEvent] = []
    try:
        # Four clients that connect at once: the parent deals the connections out in turn,
        # two to each worker, and keeps none itself.
        clients = [httpx.AsyncClient(base_url=base, timeout=30) for _ in range(4)]
        try:
            answers = await asyncio.gather(*(c.get("/healthz") for c in clients))
            assert {a.status_code for a in answers} == {200}
            held = _connections_by_process(proc.pid, port)
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
        assert held.pop(proc.pid) == 0, held
        assert sorted(n for n in held.values() if n) == [2, 2], held
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            # Quick runs on both workers: each answers with the approval interrupt.
            results = await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/agent/run",
                        json={"question": "What is A? What is B?", "approval": "always"},
                    )
                    for _ in range(6)
                )
            )
            assert {r.json()["status"] for r in results} == {"interrupted"}
            # A real local-model run, stopped while its first step writes.
            body = {"question": "Explain how a B-tree stays balanced.", "approval": "never"}
            async with open_run_stream(client, body) as response:
                async for event in sse_events(response):
                    events.append(event)
                    if event.event == "delta" and proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert events[0].event == "metadata"
    assert events[-1].event == "error", events[-1]
    assert "server is stopping" in events[-1].data["message"]
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert output.count("Application shutdown complete") == 2, output


def test_a_worker_that_dies_is_replaced_and_the_port_keeps_serving(cli: Cli) -> None:
    port = _free_port()
    proc, _ = _serve(cli, port, "--workers", "2")
    try:
        first = _workers(proc.pid)
        assert len(first) == 2
        killed = min(first)
        psutil.Process(killed).kill()
        # Connections keep being served (by the other worker meanwhile), and once the new
        # worker has started, it holds some of them.
        _connect_until_a_new_worker_serves(proc.pid, port, first)
        assert killed not in _workers(proc.pid)
        assert len(_workers(proc.pid)) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert f"worker {killed} exited" in output
    assert output.count("Application shutdown complete") == 2, output


def test_workers_that_cannot_start_stop_the_server_with_an_error(cli: Cli) -> None:
    """A worker whose app cannot start is not started again and again: the server exits."""
    nothing_listens = f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres"
    proc = cli.start(
        "serve",
        "--port",
        str(_free_port()),
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


def test_a_stalled_worker_is_passed_over(cli: Cli) -> None:
    """A worker that has not taken the connection it was handed gets no more of them."""
    proc, base, stalled = _serve_with_a_stopped_worker(cli)
    try:
        served = 0
        for _ in range(6):  # a new connection each
            with contextlib.suppress(httpx.TimeoutException):
                served += httpx.get(f"{base}/healthz", timeout=3).status_code == 200
    finally:
        os.kill(stalled, signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    # At most the one connection it was handed before waits; dealt in plain turn, three would.
    assert served >= 5, output
    assert proc.returncode == 0, output


def test_sighup_replaces_the_workers_and_the_port_never_stops_serving(cli: Cli) -> None:
    port = _free_port()
    proc, base = _serve(cli, port, "--workers", "2")
    failures: list[str] = []
    try:
        old = _workers(proc.pid)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 120
        while (now := _workers(proc.pid)) & old or len(now) != 2:
            assert time.monotonic() < deadline, (old, now)
            try:  # a new connection each time
                answer = httpx.get(f"{base}/healthz", timeout=30)
                if answer.status_code != 200:
                    failures.append(f"status {answer.status_code}")
            except httpx.TransportError as exc:
                failures.append(repr(exc))
            time.sleep(0.05)
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert failures == [], failures
    assert proc.returncode == 0, output
    assert output.count("stopped: retired") == 2, output
    assert output.count("Application shutdown complete") == 4, output


def test_sighup_and_sigttin_keep_the_workers_when_new_ones_cannot_start(tmp_path: Path) -> None:
    port, fail, log = _free_port(), tmp_path / "fail", tmp_path / "log"
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
        wait_ready(proc, f"{base}/readyz", timeout=60, name="the server", output=log.read_text)
        old = _workers(proc.pid)
        fail.touch()
        proc.send_signal(signal.SIGHUP)
        # Both new workers fail to start and are not started again; the old ones serve on.
        deadline = time.monotonic() + 60
        while log.read_text().count("keeping the running ones") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert _workers(proc.pid) == old
        # Nor is a worker added by SIGTTIN, and the server does not stop for it.
        proc.send_signal(signal.SIGTTIN)
        while "an added worker exited while starting" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert _workers(proc.pid) == old
        pids = {httpx.get(f"{base}/readyz", timeout=10).json()["pid"] for _ in range(4)}
        assert pids == old
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()


def test_a_connection_a_dead_worker_never_took_is_served_by_another(cli: Cli) -> None:
    proc, base, stuck = _serve_with_a_stopped_worker(cli)
    try:
        # Two new connections at once: one is dealt to each worker, the stopped one included.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = [pool.submit(httpx.get, f"{base}/healthz", timeout=60) for _ in range(2)]
            time.sleep(1)
            assert sum(a.done() for a in answers) == 1
            os.kill(stuck, signal.SIGKILL)
            statuses = [a.result().status_code for a in answers]
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert statuses == [200, 200], output


def test_a_worker_whose_event_loop_is_stuck_is_killed_and_replaced(cli: Cli) -> None:
    # Idle workers that say nothing else keep saying their loop runs: none is restarted in
    # twice the timeout. Then one is stopped, as a stuck event loop would be.
    proc, base, stuck = _serve_with_a_stopped_worker(cli, "--worker-timeout", "2", idle_s=4)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            # One new connection is dealt to each worker; the stuck one's is served by the
            # other once the parent has killed the stuck worker.
            answers = [pool.submit(httpx.get, f"{base}/healthz", timeout=60) for _ in range(2)]
            statuses = [a.result().status_code for a in answers]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (
            stuck in _workers(proc.pid) or len(_workers(proc.pid)) < 2
        ):
            time.sleep(0.2)
        workers = _workers(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert statuses == [200, 200], output
    assert stuck not in workers, output
    assert len(workers) == 2, output
    assert f"worker {stuck} has been silent" in output
    assert f"worker {stuck} exited" in output
    assert proc.returncode == 0, output


def test_sigttin_adds_a_worker_and_sigttou_removes_one_but_never_the_last(cli: Cli) -> None:
    port = _free_port()
    proc, base = _serve(cli, port, "--workers", "2")
    try:
        first = _workers(proc.pid)
        proc.send_signal(signal.SIGTTIN)
        _connect_until_a_new_worker_serves(proc.pid, port, first)
        assert len(_workers(proc.pid)) == 3
        for _ in range(3):  # the third finds one worker left, and keeps it
            proc.send_signal(signal.SIGTTOU)
            time.sleep(0.2)
        deadline = time.monotonic() + 60
        while len(_workers(proc.pid)) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # past the retired workers' grace: the last would be gone by now
        assert len(_workers(proc.pid)) == 1
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "SIGTTOU: keeping the last worker" in output
    assert output.count("stopped: retired") == 2, output
    assert output.count("Application shutdown complete") == 3, output
