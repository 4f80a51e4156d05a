"""`agentgraph serve` as its own process: ready, serving, and stopping cleanly on SIGTERM."""

import signal
import subprocess
import sys

import httpx

from tests.integration.conftest import REPO, Cli, _free_port, wait_ready


def test_agentgraph_serve_runs_and_stops_on_sigterm(cli: Cli) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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
