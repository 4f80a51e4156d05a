"""A run cut off by a server stop is continued: over HTTP on a new server after a real SIGTERM,
or by `agentgraph resume --continue`; the steps finished before the stop are not run again.
And the 409s and 404 of a continue that cannot be."""

import asyncio
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from app.models import get_chat_model
from app.settings import Settings
from bench.common import free_port, wait_ready
from tests.fakes import ScriptedChatModel, register_fakes, scripted_spec
from tests.integration.conftest import Cli
from tests.integration.server_harness import (
    RunningServer,
    SseEvent,
    open_run_stream,
    running_server,
    sse_events,
    stream_run,
    wait_for,
)

QUESTION = "What is A? What is B?"
STEPS = {"s1", "s2"}


@contextmanager
def scripted_server(cli: Cli, log_path: Path) -> Iterator[tuple["subprocess.Popen[str]", str]]:
    """`agentgraph serve` in a process of its own, with the scripted models registered."""
    port = free_port()
    with log_path.open("w") as log:
        proc = cli.start("serve", "--host", "127.0.0.1", "--port", str(port), stdout=log)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(
                proc,
                f"{base}/readyz",
                timeout_s=90,
                name="the server",
                output=lambda: f"see {log_path}",
            )
            yield proc, base
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def _finished_steps(thread: dict[str, Any]) -> set[str]:
    report = thread["report"] or {"steps": []}
    return {str(s["step_id"]) for s in report["steps"] if s["status"] == "done"}


async def _cut_off(base: str, spec: str, stop: Callable[[], object]) -> str:
    """Start a run, stop the server once one step is checkpointed; return the thread id."""
    events: list[SseEvent] = []
    async with (
        httpx.AsyncClient(base_url=base, timeout=60) as client,
        open_run_stream(
            client, {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
        ) as response,
    ):
        async for event in sse_events(response):
            events.append(event)
            if event.event != "step_result":
                continue
            thread_id: str = events[0].data["thread_id"]
            path = f"/api/v1/threads/{thread_id}"

            async def checkpointed(path: str = path) -> bool:
                return bool(_finished_steps((await client.get(path)).json()))

            await wait_for(checkpointed, within_s=30)
            thread = (await client.get(path)).json()
            assert thread["status"] == "running"
            assert thread["can_continue"] is False  # its run holds the thread
            stop()
    assert events[-1].event == "error", events[-1]
    assert "server is stopping" in events[-1].data["message"]
    return thread_id


async def test_a_run_cut_off_by_sigterm_is_continued_over_http_on_a_new_server(
    settings: Settings, embedded_url: str, scripted_cli: Cli, tmp_path: Path
) -> None:
    register_fakes()
    gate = tmp_path / "gate"
    # The plan's two steps run in parallel: the first model call answers, the second waits
    # at the closed gate, and the server gets SIGTERM while it waits.
    spec = scripted_spec(reply="Step answer {n}.", gate_file=str(gate), gate_from_call=2)
    with scripted_server(scripted_cli, tmp_path / "first-server.log") as (proc, base):
        thread_id = await _cut_off(base, spec, lambda: proc.send_signal(signal.SIGTERM))
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)

    gate.touch()
    with running_server(settings, embedded_url) as second:
        async with httpx.AsyncClient(base_url=second.base_url, timeout=60) as client:
            thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
            assert thread["status"] == "running"
            assert thread["can_continue"] is True
            assert thread["next"] == ["reasoning"]
            (finished,) = _finished_steps(thread)

            events = await stream_run(client, f"/api/v1/threads/{thread_id}/continue.stream", {})
            assert events[0].event == "metadata"
            assert events[-1].event == "final", events[-1]
            rerun = [e.data["result"]["step_id"] for e in events if e.event == "step_result"]
            assert rerun == sorted(STEPS - {finished})

            thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
            assert thread["status"] == "done"
            assert thread["can_continue"] is False
            steps = {s["step_id"]: s for s in thread["report"]["steps"]}
            assert set(steps) == STEPS
            assert all(s["status"] == "done" and s["attempts"] == 1 for s in steps.values())
            # In this process: the one unfinished step and the synthesis, nothing more.
            model = get_chat_model(spec)
            assert isinstance(model, ScriptedChatModel)
            assert model.calls == 2

            again = await client.post(f"/api/v1/threads/{thread_id}/continue")
            assert again.status_code == 409, again.text
            assert again.json()["error"] == "NothingToContinueError"
            assert "nothing left to run" in again.json()["message"]


async def test_continue_refuses_unknown_waiting_and_running_threads(
    api: RunningServer, tmp_path: Path
) -> None:
    register_fakes()
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        unknown = await client.post("/api/v1/threads/no-such-thread-0000/continue")
        assert unknown.status_code == 404, unknown.text
        unknown_stream = await client.post("/api/v1/threads/no-such-thread-0000/continue.stream")
        assert unknown_stream.status_code == 404, unknown_stream.text

        waiting = await client.post(
            "/api/v1/agent/run",
            json={"question": QUESTION, "model": scripted_spec(), "approval": "always"},
        )
        thread_id = waiting.json()["thread_id"]
        refused = await client.post(f"/api/v1/threads/{thread_id}/continue")
        assert refused.status_code == 409, refused.text
        assert "resume it" in refused.json()["message"]
        assert (await client.get(f"/api/v1/threads/{thread_id}")).json()["can_continue"] is False

        gate = tmp_path / "gate"
        spec = scripted_spec(reply="Held.", gate_file=str(gate))
        body = {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
        async with open_run_stream(client, body) as response:
            async for event in sse_events(response):
                if event.event == "metadata":
                    running_id = event.data["thread_id"]
                if (
                    event.event == "handoff"
                    and event.data["target"] == "reasoning"
                    and not gate.exists()
                ):
                    thread = (await client.get(f"/api/v1/threads/{running_id}")).json()
                    assert thread["status"] == "running"
                    assert thread["can_continue"] is False
                    busy = await client.post(f"/api/v1/threads/{running_id}/continue")
                    assert busy.status_code == 409, busy.text
                    assert "is running" in busy.json()["message"]
                    gate.touch()
        assert event.event == "final"


async def test_the_cli_continues_a_run_that_a_stopped_server_cut_off(
    settings: Settings, embedded_url: str, scripted_cli: Cli, tmp_path: Path
) -> None:
    register_fakes()
    gate = tmp_path / "gate"
    spec = scripted_spec(reply="Step answer {n}.", gate_file=str(gate), gate_from_call=2)
    with running_server(settings, embedded_url) as server:
        # Stopped from another thread, as uvicorn's own SIGTERM handler would stop it.
        loop = asyncio.get_running_loop()
        thread_id = await _cut_off(
            server.base_url, spec, lambda: loop.run_in_executor(None, server.stop)
        )
    shown = scripted_cli.json("threads", "show", thread_id)
    assert shown["status"] == "running"
    assert shown["can_continue"] is True

    gate.touch()
    document = scripted_cli.json("resume", thread_id, "--continue")
    assert document["status"] == "done", document
    assert document["_exit_code"] == 0
    steps = document["report"]["steps"]
    assert {s["step_id"] for s in steps} == STEPS
    assert all(s["status"] == "done" and s["attempts"] == 1 for s in steps)
    again = scripted_cli.run("resume", thread_id, "--continue")
    assert again.returncode == 1
    assert "nothing left to run" in again.stderr
