"""`agentgraph serve` as its own process (one or several workers): ready, serving, and
stopping cleanly on SIGTERM."""

import asyncio
import signal
import subprocess

import httpx

from tests.integration.conftest import Cli, _free_port, wait_ready
from tests.integration.server_harness import SseEvent, open_run_stream, sse_events


def _serve(cli: Cli, port: int, *options: str) -> "subprocess.Popen[str]":
    """`agentgraph serve` on 127.0.0.1:`port` in a process of its own."""
    return cli.start("serve", "--host", "127.0.0.1", "--port", str(port), *options)


def test_agentgraph_serve_runs_and_stops_on_sigterm(cli: Cli) -> None:
    port = _free_port()
    proc = _serve(cli, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(
            proc,
            f"{base}/readyz",
            timeout=90,
            name="the server",
            output=lambda: proc.communicate()[0],
        )
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
    proc = _serve(cli, port, "--workers", "2")
    base = f"http://127.0.0.1:{port}"
    events: list[SseEvent] = []
    try:
        wait_ready(
            proc,
            f"{base}/readyz",
            timeout=120,
            name="the server",
            output=lambda: proc.communicate()[0],
        )
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
