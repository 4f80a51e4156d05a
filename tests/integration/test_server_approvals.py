"""The approvals inbox, the race of two resumes, a client that leaves mid-stream, and a server
that stops while runs wait or stream, then a new server on the same database."""

import asyncio
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from tests.fakes import MakeModel
from tests.integration.server_harness import (
    RunningServer,
    open_run_stream,
    running_server,
    sse_events,
    stream_run,
    wait_for,
)

QUESTION = "What is A? What is B?"


async def _interrupted(client: httpx.AsyncClient, spec: str) -> str:
    result = (
        await client.post(
            "/api/v1/agent/run", json={"question": QUESTION, "model": spec, "approval": "always"}
        )
    ).json()
    assert result["status"] == "interrupted", result
    thread_id: str = result["thread_id"]
    return thread_id


async def _pending(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/v1/approvals", params={"status": "pending"})
    assert response.status_code == 200, response.text
    return {item["thread_id"]: item for item in response.json()}


async def test_inbox_lists_waiting_runs_and_approves_or_rejects_them(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Inbox answer.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        to_approve = await _interrupted(client, spec)
        to_reject = await _interrupted(client, spec)
        pending = await _pending(client)
        assert {to_approve, to_reject} <= set(pending)
        item = pending[to_approve]
        assert item["payload"]["gate"] == "plan"
        assert item["payload"]["plan"]["steps"]
        assert item["waiting_s"] >= 0
        assert item["waiting_since"]

        approved = await client.post(f"/api/v1/approvals/{to_approve}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "done"
        assert "Inbox answer." in approved.json()["answer"]

        rejected = await client.post(
            f"/api/v1/approvals/{to_reject}/reject", json={"reason": "too risky"}
        )
        assert rejected.json()["status"] == "rejected"
        assert "too risky" in rejected.json()["answer"]

        pending = await _pending(client)
        assert to_approve not in pending
        assert to_reject not in pending
        again = await client.post(f"/api/v1/approvals/{to_approve}/approve")
        assert again.status_code == 409


async def test_a_resume_with_an_edited_plan_runs_that_plan(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Paris.")
    edited = {
        "goal": "What is the capital of France?",
        "steps": [
            {
                "id": "capital",
                "kind": "reasoning",
                "instruction": "What is the capital of France?",
                "depends_on": [],
                "requires_approval": False,
            }
        ],
    }
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        thread_id = await _interrupted(client, spec)
        resumed = await client.post(
            f"/api/v1/threads/{thread_id}/resume",
            json={"decision": "edit", "plan": edited, "reason": "one question is enough"},
        )
        assert resumed.status_code == 200, resumed.text
        result = resumed.json()
        assert result["status"] == "done", result
        assert result["plan"] == edited
        assert [s["step_id"] for s in result["report"]["steps"]] == ["capital"]
        thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
    assert [r["source"] for r in thread["plan_history"]] == ["rules", "edit"]
    assert "one question is enough" in thread["plan_history"][1]["reason"]


async def test_two_simultaneous_resumes_exactly_one_wins(
    api: RunningServer, make_model: MakeModel, tmp_path: Path
) -> None:
    # The winner's run waits in its first model call until the gate opens, holding the
    # thread's lock all along: the other resume always meets the lock, never a finished run.
    gate = tmp_path / "gate"
    spec, model = make_model(reply="Race answer.", gate_file=str(gate))
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        thread_id = await _interrupted(client, spec)
        assert model.calls == 0  # nothing called the model before the approval gate
        path = f"/api/v1/threads/{thread_id}/resume"
        first = asyncio.create_task(client.post(path, json={"decision": "approve"}))
        second = asyncio.create_task(client.post(path, json={"decision": "approve"}))
        done, _ = await asyncio.wait(
            {first, second}, timeout=30, return_when=asyncio.FIRST_COMPLETED
        )
        assert len(done) == 1, "both resumes ended while the gate was closed"
        loser = done.pop()
        winner = second if loser is first else first
        refused = loser.result()
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "ThreadBusyError"
        assert "is running" in refused.json()["message"]
        assert not winner.done()

        gate.touch()
        won = await winner
        assert won.status_code == 200, won.text
        assert won.json()["status"] == "done"
        assert "Race answer." in won.json()["answer"]

        thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
        assert thread["status"] == "done"
        approvals = thread["report"]["approvals"]
        assert [a["decision"] for a in approvals] == ["approve"]


async def test_a_client_that_disconnects_does_not_stop_the_run(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, model = make_model(reply="Finished without a listener.", delay_s=0.5)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        async with open_run_stream(
            client, {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
        ) as response:
            async for event in sse_events(response):
                if event.event == "metadata":
                    thread_id = event.data["thread_id"]
                if event.event == "handoff":
                    break  # leave mid-run: the connection closes here

        async def finished() -> bool:
            view = await client.get(f"/api/v1/threads/{thread_id}")
            return bool(view.status_code == 200 and view.json()["status"] == "done")

        await wait_for(finished)
        thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
        assert "Finished without a listener." in thread["answer"]
        assert model.calls >= 3  # two steps and the synthesis all ran


async def test_restart_stop_while_waiting_then_resume_on_a_new_server(
    settings: Settings, embedded_url: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer after a restart.")
    with running_server(settings, embedded_url) as first:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=60) as client:
            thread_id = await _interrupted(client, spec)
        first.stop()

    with running_server(settings, embedded_url) as second:
        async with httpx.AsyncClient(base_url=second.base_url, timeout=60) as client:
            assert thread_id in await _pending(client)
            events = await stream_run(
                client, f"/api/v1/threads/{thread_id}/resume.stream", {"decision": "approve"}
            )
            assert events[-1].event == "final"
            thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
            assert thread["status"] == "done"
            assert "Answer after a restart." in thread["answer"]


async def test_stopping_the_server_ends_streams_with_an_error_event(
    settings: Settings, embedded_url: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Never finished here.", delay_s=30)
    with running_server(settings, embedded_url) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            events: list[Any] = []
            async with open_run_stream(
                client, {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
            ) as response:
                async for event in sse_events(response):
                    events.append(event)
                    if event.event == "handoff" and event.data["source"] == "dispatch":
                        # The plan is checkpointed and a 30 s step runs: stop from another
                        # thread, as a signal would.
                        asyncio.get_running_loop().run_in_executor(None, server.stop)
            assert events[-1].event == "error"
            assert "server is stopping" in events[-1].data["message"]
            thread_id = events[0].data["thread_id"]

    with running_server(settings, embedded_url) as again:
        async with httpx.AsyncClient(base_url=again.base_url, timeout=60) as client:
            history = await client.get(f"/api/v1/threads/{thread_id}/history")
            assert history.status_code == 200
            # The plan was checkpointed before the stop.
            thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
            assert thread["plan"]["steps"]


async def test_a_resume_right_after_the_interrupt_finds_the_thread_free(
    api: RunningServer, make_model: MakeModel
) -> None:
    # The run's lock is released before its end is reported, so an immediate resume never
    # sees its own finished run as busy.
    spec, _ = make_model(reply="Right away.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        for _ in range(10):
            thread_id = await _interrupted(client, spec)
            resumed = await client.post(
                f"/api/v1/threads/{thread_id}/resume", json={"decision": "approve"}
            )
            assert resumed.status_code == 200, resumed.text
            assert resumed.json()["status"] == "done"
