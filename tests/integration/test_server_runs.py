"""The native run API over real uvicorn and httpx: SSE events in order, waiting runs,
threads, history and forks. The scripted fake model stands in where the model is not the
subject; one run uses the real local model end to end."""

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
)

QUESTION = "What is A? What is B?"


def _names(events: list[Any]) -> list[str]:
    return [e.event for e in events]


async def test_sse_stream_carries_every_event_type_in_order(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Fake answer {n}.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        first = await stream_run(
            client,
            "/api/v1/agent/run.stream",
            {"question": QUESTION, "model": spec, "approval": "always", "mode": "plan"},
        )
        names = _names(first)
        assert names[0] == "metadata"
        thread_id = first[0].data["thread_id"]
        assert first[0].data["run_id"]
        assert names[-1] == "interrupt"
        assert "plan_update" in names
        assert names.index("plan_update") < names.index("interrupt")
        interrupt = first[-1].data
        assert interrupt["payload"]["gate"] == "plan"
        assert interrupt["resume_url"] == f"/api/v1/threads/{thread_id}/resume"
        assert "approve" in interrupt["payload"]["resume"]

        second = await stream_run(
            client, f"/api/v1/threads/{thread_id}/resume.stream", {"decision": "approve"}
        )
        names = _names(second)
        assert names[0] == "metadata"
        assert second[0].data["thread_id"] == thread_id
        assert names[-1] == "final"
        for name in ("handoff", "delta", "step_result"):
            assert name in names, names
        assert names.index("step_result") < names.index("final")
        deltas = "".join(e.data["text"] for e in second if e.event == "delta")
        assert "Fake answer" in deltas

        thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
        assert thread["status"] == "done"
        assert thread["answer"]
        assert thread["pending_approval"] is None
        assert [s["id"] for s in thread["plan"]["steps"]] == ["s1", "s2"]


async def test_run_waits_and_returns_the_final_result(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="The waited answer.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        response = await client.post(
            "/api/v1/agent/run",
            json={"question": "What is A?", "model": spec, "approval": "never", "thread_id": None},
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["status"] == "done"
        assert "The waited answer." in result["answer"]
        assert result["report"]["total_tokens"] > 0
        thread_id = result["thread_id"]

        history = (await client.get(f"/api/v1/threads/{thread_id}/history")).json()
        checkpoints = history["checkpoints"]
        assert len(checkpoints) > 3
        assert checkpoints[0]["next"] == []
        limited = await client.get(f"/api/v1/threads/{thread_id}/history", params={"limit": 2})
        assert len(limited.json()["checkpoints"]) == 2

        # Fork before the synthesis with another answer written as the synthesiser: the
        # thread's head moves to the fork, the old branch stays in the history.
        before_synthesis = next(c for c in checkpoints if c["next"] == ["synthesize"])
        fork = await client.post(
            f"/api/v1/threads/{thread_id}/fork",
            json={
                "checkpoint_id": before_synthesis["checkpoint_id"],
                "values": {"answer": "A forked answer."},
                "as_node": "synthesize",
            },
        )
        assert fork.status_code == 200, fork.text
        forked = fork.json()["checkpoint_id"]
        thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
        assert thread["checkpoint_id"] == forked
        assert thread["next"] == ["finalize"]
        assert thread["status"] == "running"


async def test_interrupted_run_returns_the_pending_approval(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model()
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        result = (
            await client.post(
                "/api/v1/agent/run",
                json={"question": QUESTION, "model": spec, "approval": "always"},
            )
        ).json()
        assert result["status"] == "interrupted"
        assert result["pending_approval"]["gate"] == "plan"
        thread_id = result["thread_id"]

        rejected = await client.post(
            f"/api/v1/threads/{thread_id}/resume",
            json={"decision": "reject", "reason": "not today"},
        )
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["status"] == "rejected"
        assert "not today" in rejected.json()["answer"]


async def test_real_local_model_end_to_end(api: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=300) as client:
        events = await stream_run(
            client,
            "/api/v1/agent/run.stream",
            {
                "question": "What is the capital of France?",
                "model": "local",
                "approval": "never",
                "mode": "direct",
                "max_output_tokens": 32,
            },
        )
        assert events[0].event == "metadata"
        assert events[-1].event == "final", [e.event for e in events]
        assert any(e.event == "delta" and e.data["text"] for e in events)
        thread = (await client.get(f"/api/v1/threads/{events[0].data['thread_id']}")).json()
        assert thread["status"] == "done"
        assert thread["answer"].strip()


async def test_an_idle_stream_gets_keep_alive_comments(
    settings: Settings, embedded_url: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Slow answer.", delay_s=1.0)
    with running_server(settings, embedded_url, keepalive_s=0.2) as server:
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=60) as client,
            open_run_stream(
                client, {"question": "What is A?", "model": spec, "approval": "never"}
            ) as response,
        ):
            lines = [line async for line in response.aiter_lines()]
    assert ": keep-alive" in lines
    assert "event: final" in lines


async def test_runs_beyond_the_process_limit_wait_their_turn(
    settings: Settings, embedded_url: str, make_model: MakeModel, tmp_path: Path
) -> None:
    """With one run at a time, a second run holds its thread and streams its metadata at
    once, and its graph starts when the first run ends."""
    gate = tmp_path / "gate"
    held, _ = make_model(reply="Held answer.", gate_file=str(gate))
    quick, _ = make_model(reply="Quick answer.")
    one_at_a_time = settings.model_copy(update={"max_concurrent_runs": 1})
    with running_server(one_at_a_time, embedded_url) as server:
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=60) as client,
            open_run_stream(
                client, {"question": "What is A?", "model": held, "approval": "never"}
            ) as first,
        ):
            first_events = sse_events(first)
            async for event in first_events:
                if event.event == "handoff":
                    break  # the first run now waits in the model, at the closed gate
            async with open_run_stream(
                client, {"question": "What is B?", "model": quick, "approval": "never"}
            ) as second:
                events = sse_events(second)
                metadata = await anext(events)
                assert metadata.event == "metadata"
                waiting = asyncio.create_task(anext(events))
                runs = server.server.app.state.services.runs
                for _ in range(600):  # until the second run waits for the slot, or 30 s
                    if runs.waiting:
                        break
                    await asyncio.sleep(0.05)
                assert runs.waiting == 1, "the second run did not wait for a slot"
                assert not waiting.done(), "the second run started before a slot was free"
                busy = await client.post(
                    "/api/v1/agent/run",
                    json={
                        "question": "C?",
                        "model": quick,
                        "thread_id": metadata.data["thread_id"],
                    },
                )
                assert busy.status_code == 409
                gate.touch()
                rest = [await waiting] + [e async for e in events]
            first_rest = [e async for e in first_events]
    assert rest[-1].event == "final"
    assert "Quick answer." in rest[-1].data["answer"]
    assert first_rest[-1].event == "final"
    assert "Held answer." in first_rest[-1].data["answer"]
