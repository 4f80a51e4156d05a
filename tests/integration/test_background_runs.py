"""Background runs over real uvicorn and httpx, executed by the server's in-process queue
worker on the real Postgres queue: 202 and the run, its stream from the first event (a late
join) or after `Last-Event-ID`, a resume and a continue in the background, cancel, crons, and
the errors of what cannot be."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from app.settings import Settings
from graphs.driver import RunOrder
from graphs.queue import Executor
from graphs.retention import discard_since, prune
from graphs.run_log import get_run
from graphs.service import Agent
from graphs.threads import history
from tests.fakes import MakeModel
from tests.integration.server_harness import RunningServer, SseEvent, sse_events, wait_for

QUESTION = "What is A? What is B?"
APPROVE = {"resume": {"decision": "approve"}}


async def _start(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code == 202, response.text
    run: dict[str, Any] = response.json()
    assert (
        response.headers["location"] == f"/api/v1/threads/{run['thread_id']}/runs/{run['run_id']}"
    )
    return run


async def _stream(
    client: httpx.AsyncClient, run: dict[str, Any], headers: dict[str, str] | None = None
) -> list[SseEvent]:
    async with client.stream("GET", run["stream_url"], headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        return [e async for e in sse_events(response)]


async def _queued_on(
    client: httpx.AsyncClient, thread_id: str, body: dict[str, Any]
) -> tuple[dict[str, Any], list[SseEvent]]:
    """Queue a run on the thread and stream it to its end; return the run and its events."""
    run = await _start(client, f"/api/v1/threads/{thread_id}/runs", body)
    return run, await _stream(client, run)


async def _run(client: httpx.AsyncClient, run: dict[str, Any]) -> dict[str, Any]:
    response = await client.get(f"/api/v1/threads/{run['thread_id']}/runs/{run['run_id']}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_a_background_run_streams_from_its_log_and_a_late_join_sees_every_event(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer {n}.", delay_s=0.05)
    body = {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        run = await _start(client, "/api/v1/runs", body)
        assert run["status"] == "queued"
        assert run["kind"] == "request"

        live = await _stream(client, run)
        names = [e.event for e in live]
        assert names[0] == "metadata"
        assert names[-1] == "final", names
        assert live[-1].data["status"] == "done"
        assert {"plan_update", "delta", "step_result"} <= set(names)

        ended = await _run(client, run)
        assert ended["status"] == "done"
        assert ended["attempts"] == 1
        assert ended["error"] is None
        assert ended["worker"]

        # Joined after the end: the same events, numbered; from an id on: only the rest.
        late = await _stream(client, run)
        assert [e.event for e in late] == names
        assert [e.data for e in late[1:]] == [e.data for e in live[1:]]
        rest = await _stream(client, run, headers={"Last-Event-ID": "3"})
        assert [e.data for e in rest[1:]] == [e.data for e in live[4:]]

        listed = await client.get(f"/api/v1/threads/{run['thread_id']}/runs")
        assert [r["run_id"] for r in listed.json()] == [run["run_id"]]
        thread = await client.get(f"/api/v1/threads/{run['thread_id']}")
        assert thread.json()["status"] == "done"


async def test_an_approval_is_answered_and_a_cut_off_run_continued_in_the_background(
    api: RunningServer, make_model: MakeModel, thread_id: str
) -> None:
    spec, _ = make_model(reply="Answer {n}.")
    body = {"question": QUESTION, "model": spec, "approval": "always", "mode": "plan"}
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        first, events = await _queued_on(client, thread_id, body)
        assert events[-1].event == "interrupt"
        assert (await _run(client, first))["status"] == "interrupted"

        # A new question on a thread that waits for a person is refused at once.
        busy = await client.post(f"/api/v1/threads/{thread_id}/runs", json=body)
        assert busy.status_code == 409, busy.text

        resumed, events = await _queued_on(client, thread_id, APPROVE)
        assert resumed["kind"] == "resume"
        assert events[-1].event == "final"
        assert events[-1].data["status"] == "done"

        # Nothing is left to continue: refused at once, with the thread's status.
        nothing = await client.post(f"/api/v1/threads/{thread_id}/runs", json={"proceed": True})
        assert nothing.status_code == 409
        assert "nothing left to run" in nothing.json()["message"]
        listed = (await client.get(f"/api/v1/threads/{thread_id}/runs")).json()
        assert [r["kind"] for r in listed] == ["resume", "request"]


async def test_cancel_stops_a_running_run_and_the_thread_keeps_its_finished_steps(
    api: RunningServer, make_model: MakeModel
) -> None:
    # Two seconds a chunk: long enough to be cancelled before any step ends.
    spec, _ = make_model(reply="Answer {n}.", delay_s=2.0)
    body = {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        run = await _start(client, "/api/v1/runs", body)

        async def started() -> bool:
            return bool((await _run(client, run))["status"] == "running")

        await wait_for(started, within_s=30)
        await asyncio.sleep(0.5)
        cancelled = await client.post(
            f"/api/v1/threads/{run['thread_id']}/runs/{run['run_id']}/cancel"
        )
        assert cancelled.status_code == 202, cancelled.text

        events = await _stream(client, run)
        assert events[-1].event == "error"
        assert events[-1].data["type"] == "RunCancelled"
        ended = await _run(client, run)
        assert ended["status"] == "cancelled"
        assert "cancelled" in ended["error"]
        again = await client.post(f"/api/v1/threads/{run['thread_id']}/runs/{run['run_id']}/cancel")
        assert again.status_code == 409
        assert "cancelled already" in again.json()["message"]
        thread = (await client.get(f"/api/v1/threads/{run['thread_id']}")).json()
        assert thread["can_continue"] is True


async def test_a_cron_fires_background_runs_until_it_is_deleted(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Scheduled {n}.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        made = await client.post(
            "/api/v1/crons",
            json={
                "schedule": "* * * * * */2",  # every two seconds
                "question": "What is A?",
                "model": spec,
                "approval": "never",
            },
        )
        assert made.status_code == 201, made.text
        cron = made.json()
        assert cron["options"]["model"] == spec

        async def fired() -> bool:
            listed = (await client.get("/api/v1/crons")).json()
            mine = [c for c in listed if c["cron_id"] == cron["cron_id"]]
            return bool(mine and mine[0]["last_run_id"])

        await wait_for(fired, within_s=30)
        deleted = await client.delete(f"/api/v1/crons/{cron['cron_id']}")
        assert deleted.status_code == 204
        assert (await client.delete(f"/api/v1/crons/{cron['cron_id']}")).status_code == 404
        listed = (await client.get("/api/v1/crons")).json()
        assert cron["cron_id"] not in {c["cron_id"] for c in listed}

        # Each firing is a background run of a new thread, found by its cron.
        runs = (await client.get("/api/v1/runs", params={"cron_id": cron["cron_id"]})).json()
        assert runs
        assert {r["cron_id"] for r in runs} == {cron["cron_id"]}
        assert len({r["thread_id"] for r in runs}) == len(runs)
        events = await _stream(client, runs[-1])
        assert events[-1].event == "final", [e.event for e in events]
        fired_again = (await client.get("/api/v1/runs", params={"cron_id": cron["cron_id"]})).json()
        await asyncio.sleep(2.5)  # deleted: it fires no more
        assert len(
            (await client.get("/api/v1/runs", params={"cron_id": cron["cron_id"]})).json()
        ) == len(fired_again)


async def test_what_cannot_be_run_in_the_background_is_refused_clearly(
    api: RunningServer, thread_id: str
) -> None:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        both = await client.post(
            f"/api/v1/threads/{thread_id}/runs", json={"question": "Hi?", "proceed": True}
        )
        assert both.status_code == 422
        assert "exactly one of question, resume and proceed" in both.text
        unknown = await client.post(f"/api/v1/threads/{thread_id}/runs", json={"proceed": True})
        assert unknown.status_code == 404
        no_run = await client.get(f"/api/v1/threads/{thread_id}/runs/{'0' * 32}")
        assert no_run.status_code == 404
        bad_option = await client.post("/api/v1/runs", json={"question": "Hi?", "model": "nope:x"})
        assert bad_option.status_code in (422, 502), bad_option.text
        bad_cron = await client.post(
            "/api/v1/crons", json={"schedule": "every day", "question": "Hi?"}
        )
        assert bad_cron.status_code == 422
        assert "bad schedule" in bad_cron.json()["message"]
        no_question = await client.post("/api/v1/runs", json={"proceed": True})
        assert no_question.status_code == 422


async def test_a_thread_id_outside_ascii_is_percent_encoded_in_the_runs_urls(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer {n}.")
    thread_id = "đé ü-" + uuid.uuid4().hex[:8]
    body = {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        response = await client.post(f"/api/v1/threads/{quote(thread_id, safe='')}/runs", json=body)
        assert response.status_code == 202, response.text
        run = response.json()
        assert run["thread_id"] == thread_id
        assert response.headers["location"] == run["stream_url"].removesuffix("/stream")
        assert quote(thread_id, safe="") in response.headers["location"]
        events = await _stream(client, run)
        assert events[-1].event == "final"


async def test_pruning_deletes_the_events_of_a_threads_older_background_runs(
    api: RunningServer, agent: Agent, make_model: MakeModel, thread_id: str
) -> None:
    spec, _ = make_model(reply="Answer {n}.")
    body = {"question": QUESTION, "model": spec, "approval": "always", "mode": "plan"}
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        first, first_events = await _queued_on(client, thread_id, body)
        resumed, second_events = await _queued_on(client, thread_id, APPROVE)
        assert second_events[-1].event == "final"

        later = datetime.now(UTC) + timedelta(minutes=1)
        dry = await prune(agent.db.pool, cutoff=later, dry_run=True, thread_ids=[thread_id])
        done = await prune(agent.db.pool, cutoff=later, thread_ids=[thread_id])

        # The first run's events went (its interrupt among them), the latest run's stayed.
        assert dry.run_events_deleted == done.run_events_deleted == len(first_events) - 1
        assert [e.event for e in await _stream(client, first)] == ["metadata"]
        assert await _stream(client, resumed) == second_events
        listed = (await client.get(f"/api/v1/threads/{thread_id}/runs")).json()
        assert [(r["kind"], r["status"]) for r in listed] == [
            ("resume", "done"),
            ("request", "interrupted"),
        ]


async def test_a_run_retried_after_its_steps_wrote_and_before_their_checkpoint_goes_on(
    api: RunningServer, agent: Agent, settings: Settings, make_model: MakeModel, thread_id: str
) -> None:
    """A worker that died after every step of a super-step wrote, before that super-step's
    checkpoint, leaves a thread whose LangGraph `next` is empty: the worker that takes the
    run again continues it (no step runs again) rather than ending it as failed."""
    spec, _ = make_model(reply="Answer {n}.")
    body = {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        run, events = await _queued_on(client, thread_id, body)
    assert events[-1].event == "final"
    checkpoints = await history(agent.graph, thread_id)  # newest first
    [before] = [i for i, c in enumerate(checkpoints) if c["next"] == ["reasoning"] * 2]
    await discard_since(agent.db.pool, thread_id, checkpoints[before - 1]["created_at"])
    record = await get_run(agent.db.pool, run["run_id"])
    assert record is not None
    assert record.attempts == 1

    again = await Executor(agent, settings, agent.db.pool).resumed_order(record)

    assert again == RunOrder(thread_id=thread_id, proceed=True)
