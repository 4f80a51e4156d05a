"""One run per thread across processes: the CLI and the server take the same thread lock, so
neither runs a thread that the other is running."""

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.fakes import register_fakes, scripted_spec
from tests.integration.conftest import REPO, Cli
from tests.integration.server_harness import RunningServer, open_run_stream, sse_events, wait_for

QUESTION = "What is A? What is B?"


async def test_the_cli_refuses_a_thread_the_server_is_running(
    api: RunningServer, cli: Cli, tmp_path: Path
) -> None:
    register_fakes()
    gate = tmp_path / "gate"
    spec = scripted_spec(reply="Held by the server.", gate_file=str(gate))
    body = {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
    async with (
        httpx.AsyncClient(base_url=api.base_url, timeout=60) as client,
        open_run_stream(client, body) as response,
    ):
        async for event in sse_events(response):
            if event.event == "metadata":
                thread_id = event.data["thread_id"]
            if (
                event.event == "handoff"
                and event.data["target"] == "reasoning"
                and not gate.exists()
            ):
                # The server's run waits at the closed gate, holding the thread (a handoff
                # of the other step may follow: by then the gate is open).
                refused = cli.run("ask", "Another question?", "--thread", thread_id, "--no-input")
                assert refused.returncode == 1, refused.stderr
                assert "is running" in refused.stderr
                gate.touch()
    assert event.event == "final"


async def test_the_server_refuses_a_thread_the_cli_is_running(
    api: RunningServer, scripted_cli: Cli, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    spec = scripted_spec(reply="Held by the CLI.", gate_file=str(gate))
    thread_id = f"cli-lock-{uuid.uuid4().hex}"
    command = [sys.executable, "-m", scripted_cli.module, "ask", QUESTION, "--thread", thread_id]
    options = ["--model", spec, "--mode", "plan", "--approval", "never", "--json"]
    proc = await asyncio.create_subprocess_exec(
        *command,
        *options,
        cwd=REPO,
        env=scripted_cli.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:

            async def planned() -> bool:
                # The CLI's run has checkpointed its plan and waits at the gate in a step.
                view = await client.get(f"/api/v1/threads/{thread_id}")
                return view.status_code == 200 and view.json()["plan"] is not None

            await wait_for(planned, within_s=60)
            busy = await client.post(
                "/api/v1/agent/run",
                json={"question": "Another question?", "thread_id": thread_id, "model": spec},
            )
            assert busy.status_code == 409, busy.text
            assert "is running" in busy.json()["message"]
            gate.touch()
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()
            assert json.loads(out)["status"] == "done"
            thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
            assert thread["status"] == "done"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
