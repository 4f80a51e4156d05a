"""Double-texting across two server processes: a new question on a thread whose run is
under way on the other server, with each `multitask_strategy`."""

import asyncio
from typing import Any

import httpx

from bench.common import SseEvent, sse_events

MODEL = "bench:delay=0.2"
"""Each model call streams three chunks 0.2 s apart: a run lasts a few seconds."""
RUN_STREAM = "/api/v1/agent/run.stream"


def _body(question: str, thread_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "question": question,
        "thread_id": thread_id,
        "model": MODEL,
        "approval": "never",
        "mode": "plan",
        **extra,
    }


async def _first_run_then(
    bases: tuple[str, str], thread_id: str, strategy: str
) -> tuple[list[SseEvent], httpx.Response, float]:
    """Stream a first run on server A; once its steps stream, ask server B a new question on
    the thread with `strategy`. Return A's events, B's answer and when A's stream ended
    before B answered (seconds; negative: after)."""
    a_events: list[SseEvent] = []
    second: asyncio.Task[httpx.Response] | None = None
    async with (
        httpx.AsyncClient(base_url=bases[0], timeout=120) as a,
        httpx.AsyncClient(base_url=bases[1], timeout=120) as b,
    ):
        body = _body("What is A? What is B?", thread_id)
        async with a.stream("POST", RUN_STREAM, json=body) as response:
            assert response.status_code == 200, (await response.aread()).decode()
            async for event in sse_events(response):
                a_events.append(event)
                if event.event == "delta" and event.data.get("step_id") and second is None:
                    ask = _body("What is C?", thread_id, multitask_strategy=strategy)
                    second = asyncio.create_task(b.post("/api/v1/agent/run", json=ask))
        a_ended = asyncio.get_running_loop().time()
        assert second is not None, "the first run streamed no step"
        answered = await second
        gap = asyncio.get_running_loop().time() - a_ended
    return a_events, answered, gap


async def _thread(base: str, thread_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
        history = (await client.get(f"/api/v1/threads/{thread_id}/history")).json()
    return thread, history["checkpoints"]


def _inputs(checkpoints: list[dict[str, Any]]) -> int:
    """How many runs with a new question the history holds (each starts with an input)."""
    return sum(1 for c in checkpoints if c["source"] == "input")


async def test_reject_is_the_default_and_refuses_with_409(
    bench_servers: tuple[str, str], thread_id: str
) -> None:
    events, answered, _ = await _first_run_then(bench_servers, thread_id, "reject")
    assert answered.status_code == 409, answered.text
    assert answered.json()["error"] == "ThreadBusyError"
    assert events[-1].event == "final"
    assert events[-1].data["status"] == "done"


async def test_enqueue_runs_after_the_current_run(
    bench_servers: tuple[str, str], thread_id: str
) -> None:
    events, answered, gap = await _first_run_then(bench_servers, thread_id, "enqueue")
    assert events[-1].event == "final", events[-1]  # the first run was not disturbed
    assert events[-1].data["status"] == "done"
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "done"
    assert gap > 0  # it answered after the first run ended
    thread, checkpoints = await _thread(bench_servers[0], thread_id)
    assert thread["status"] == "done"
    assert _inputs(checkpoints) == 2


async def test_interrupt_stops_the_run_keeping_what_it_finished(
    bench_servers: tuple[str, str], thread_id: str
) -> None:
    events, answered, _ = await _first_run_then(bench_servers, thread_id, "interrupt")
    stop = events[-1]
    assert stop.event == "error", stop
    assert stop.data["type"] == "RunStopped"
    assert "multitask_strategy=interrupt" in stop.data["message"]
    assert not any(e.event == "final" for e in events)
    # It stopped after the super-step under way: its steps finished, synthesis never ran.
    assert {e.data["result"]["step_id"] for e in events if e.event == "step_result"} == {
        "s1",
        "s2",
    }
    assert not any(e.event == "delta" and e.data.get("node") == "synthesize" for e in events)

    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "done"
    thread, checkpoints = await _thread(bench_servers[1], thread_id)
    assert thread["status"] == "done"
    assert thread["request"] == "What is C?"
    assert _inputs(checkpoints) == 2  # the stopped run's checkpoints stay in the history


async def test_rollback_discards_the_stopped_runs_checkpoints(
    bench_servers: tuple[str, str], thread_id: str
) -> None:
    async with httpx.AsyncClient(base_url=bench_servers[0], timeout=120) as a:
        before = await a.post("/api/v1/agent/run", json=_body("What is Z?", thread_id))
        assert before.json()["status"] == "done", before.text
    _, kept = await _thread(bench_servers[0], thread_id)

    events, answered, _ = await _first_run_then(bench_servers, thread_id, "rollback")
    assert events[-1].event == "error", events[-1]
    assert events[-1].data["type"] == "RunStopped"
    assert "discarded" in events[-1].data["message"]
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "done"

    thread, checkpoints = await _thread(bench_servers[1], thread_id)
    assert thread["status"] == "done"
    assert thread["request"] == "What is C?"
    # What came before the stopped run is all there; of the stopped run, nothing.
    assert {c["checkpoint_id"] for c in kept} <= {c["checkpoint_id"] for c in checkpoints}
    assert _inputs(checkpoints) == 2
    new = [c for c in checkpoints if c["checkpoint_id"] not in {k["checkpoint_id"] for k in kept}]
    assert min(c["created_at"] for c in new) > max(c["created_at"] for c in kept)
    assert _inputs(new) == 1


async def test_a_bad_strategy_is_a_422(bench_servers: tuple[str, str], thread_id: str) -> None:
    async with httpx.AsyncClient(base_url=bench_servers[0], timeout=60) as client:
        refused = await client.post(
            "/api/v1/agent/run", json=_body("What?", thread_id, multitask_strategy="queue")
        )
    assert refused.status_code == 422, refused.text
    assert "multitask_strategy" in refused.json()["message"]
