"""Approval deadlines on real servers and the embedded Postgres: a gate that waits past its
`approval_timeout` is rejected, approved (low-risk only) or escalated without anyone
answering, once, also when the deadline passed while no server ran, and with two servers on
one database."""

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.pg import open_pool, resolve_database_url
from app.settings import Settings
from graphs.deadlines import DeadlineWatch, terms_of
from graphs.driver import RunOrder, claim_run
from graphs.inbox import waiting_checkpoints
from graphs.locks import OwnConnectionLocks
from graphs.runs import thread_config
from graphs.service import Agent
from tests.fakes import MakeModel
from tests.integration.conftest import _drop_database, _fresh_database
from tests.integration.server_harness import RunningServer, running_server, wait_for

QUESTION = "What is A? What is B?"
RISKY = "Delete the old reports. What is B?"
"""A plan whose first step has side effects (the rule planner flags it): not low-risk."""


@pytest.fixture
def own_url(settings: Settings) -> Iterator[str]:
    """A database of its own, that no other server of the session watches."""
    admin = resolve_database_url(settings)
    name, url = _fresh_database(admin)
    yield url
    _drop_database(admin, name)


async def _start(
    client: httpx.AsyncClient, spec: str, *, wait: str, action: str, question: str = QUESTION
) -> dict[str, Any]:
    started = await client.post(
        "/api/v1/agent/run",
        json={
            "question": question,
            "model": spec,
            "mode": "plan",
            "approval": "always",
            "approval_timeout": wait,
            "approval_timeout_action": action,
        },
    )
    assert started.status_code == 200, started.text
    result: dict[str, Any] = started.json()
    assert result["status"] == "interrupted", result
    return result


async def _thread(client: httpx.AsyncClient, thread_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/threads/{thread_id}")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


async def _ends(client: httpx.AsyncClient, thread_id: str, status: str) -> dict[str, Any]:
    async def ended() -> bool:
        return (await _thread(client, thread_id))["status"] == status

    await wait_for(ended, within_s=30)
    return await _thread(client, thread_id)


async def _pending(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/v1/approvals")
    assert response.status_code == 200, response.text
    return {item["thread_id"]: item for item in response.json()}


def _decisions(view: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [(a["decision"], a["reason"], a.get("by")) for a in view["report"]["approvals"]]


def _gauge(text: str, name: str) -> float:
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(f"{name} ")]
    assert len(values) == 1, text
    return float(values[0])


async def test_a_gate_past_its_deadline_is_rejected_as_timed_out(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, model = make_model(reply="Never asked.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        started = await _start(client, spec, wait="2s", action="reject")
        thread_id = started["thread_id"]
        payload = started["pending_approval"]
        assert payload["deadline"] is not None
        assert payload["on_timeout"] == "reject"
        item = (await _pending(client)).get(thread_id)
        if item is not None:  # unless the deadline passed already
            assert item["deadline"] is not None
            assert 0 <= item["time_left_s"] <= 2
            assert item["escalated"] is False

        view = await _ends(client, thread_id, "rejected")
        assert "timed out" in view["answer"]
        assert _decisions(view) == [("reject", "timed out", "deadline")]
        assert thread_id not in await _pending(client)
        assert model.calls == 0  # no step ran
        refused = await client.post(f"/api/v1/approvals/{thread_id}/approve")
        assert refused.status_code == 409, refused.text  # nothing left to answer


async def test_a_low_risk_gate_past_its_deadline_is_approved_and_runs_to_the_end(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, model = make_model(reply="Approved by the clock.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        started = await _start(client, spec, wait="1s", action="approve")
        assert started["pending_approval"]["low_risk"] is True
        assert started["pending_approval"]["on_timeout"] == "approve"
        view = await _ends(client, started["thread_id"], "done")
        assert "Approved by the clock." in view["answer"]
        assert _decisions(view) == [("approve", "timed out", "deadline")]
        assert model.calls >= 2  # the plan's steps ran after the deadline approved it


async def test_an_escalated_gate_waits_flagged_in_the_inbox_and_the_metrics(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answered after the escalation.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        started = await _start(client, spec, wait="1s", action="escalate")
        thread_id = started["thread_id"]

        async def flagged() -> bool:
            item = (await _pending(client)).get(thread_id)
            return bool(item and item["escalated"])

        await wait_for(flagged, within_s=30)
        item = (await _pending(client))[thread_id]
        assert item["time_left_s"] == 0
        assert item["escalation"].startswith("timed out")
        assert (await _thread(client, thread_id))["status"] == "interrupted"
        metrics = (await client.get("/metrics")).text
        escalated = _gauge(metrics, "agentgraph_approvals_escalated")
        assert escalated >= 1
        assert 'agentgraph_approval_timeouts_total{action="escalate"}' in metrics

        # Still a person's to answer: their decision is the one recorded.
        approved = await client.post(f"/api/v1/approvals/{thread_id}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "done"
        view = await _thread(client, thread_id)
        assert [a["decision"] for a in view["report"]["approvals"]] == ["approve"]
        assert view["report"]["approvals"][0].get("by") != "deadline"
        after = _gauge((await client.get("/metrics")).text, "agentgraph_approvals_escalated")
        assert after == escalated - 1


async def test_a_high_risk_gate_is_escalated_instead_of_approved(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, model = make_model(reply="Never asked.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        started = await _start(client, spec, wait="1s", action="approve", question=RISKY)
        thread_id = started["thread_id"]
        assert any(s["requires_approval"] for s in started["plan"]["steps"])
        assert started["pending_approval"]["low_risk"] is False
        assert started["pending_approval"]["on_timeout"] == "escalate"

        async def flagged() -> bool:
            item = (await _pending(client)).get(thread_id)
            return bool(item and item["escalated"])

        await wait_for(flagged, within_s=30)
        assert "not low-risk" in (await _pending(client))[thread_id]["escalation"]
        assert (await _thread(client, thread_id))["status"] == "interrupted"
        assert model.calls == 0
        rejected = await client.post(
            f"/api/v1/approvals/{thread_id}/reject", json={"reason": "not today"}
        )
        assert rejected.json()["status"] == "rejected"


async def test_a_deadline_that_passed_while_no_server_ran_is_enforced_after_a_restart(
    settings: Settings, own_url: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Never asked.")
    with running_server(settings, own_url) as first:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=60) as client:
            started = await _start(client, spec, wait="3s", action="reject")
        first.stop()
    thread_id = started["thread_id"]
    pool = await open_pool(own_url, max_size=1)
    try:
        assert thread_id in {t for t, _ in await waiting_checkpoints(pool)}  # not yet enforced
        deadline = time.time() + 3.5
        await asyncio.sleep(max(0.0, deadline - time.time()))
        assert thread_id in {t for t, _ in await waiting_checkpoints(pool)}  # nobody watched
    finally:
        await pool.close()

    with running_server(settings, own_url) as second:
        async with httpx.AsyncClient(base_url=second.base_url, timeout=60) as client:
            view = await _ends(client, thread_id, "rejected")
            assert _decisions(view) == [("reject", "timed out", "deadline")]


async def test_two_servers_on_one_database_enforce_each_deadline_once(
    settings: Settings, own_url: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Approved once.", delay_s=0.2)
    with running_server(settings, own_url) as one, running_server(settings, own_url) as two:
        async with (
            httpx.AsyncClient(base_url=one.base_url, timeout=60) as first,
            httpx.AsyncClient(base_url=two.base_url, timeout=60) as second,
        ):
            started = [
                await _start(first, spec, wait="1s", action="reject"),
                await _start(second, spec, wait="1s", action="reject"),
                await _start(first, spec, wait="1s", action="approve"),
                await _start(second, spec, wait="1s", action="escalate"),
            ]
            rejected = [await _ends(first, s["thread_id"], "rejected") for s in started[:2]]
            approved = await _ends(second, started[2]["thread_id"], "done")
            for view in rejected:
                assert _decisions(view) == [("reject", "timed out", "deadline")]
            assert _decisions(approved) == [("approve", "timed out", "deadline")]
            escalated = started[3]["thread_id"]

            async def flagged() -> bool:
                item = (await _pending(second)).get(escalated)
                return bool(item and item["escalated"])

            await wait_for(flagged, within_s=30)
            metrics = (await first.get("/metrics")).text
            assert _gauge(metrics, "agentgraph_approvals_escalated") == 1


async def test_two_watchers_answering_one_gate_at_once_take_one_decision(
    agent: Agent, settings: Settings, make_model: MakeModel, thread_id: str
) -> None:
    # A deadline an hour away, so that no server of the session acts on it: the watchers
    # are made to answer it at once, as two replicas whose ticks meet would.
    spec, _ = make_model(reply="Approved once.", delay_s=0.2)
    options = {
        "model": spec,
        "mode": "plan",
        "approval": "always",
        "approval_timeout": "1h",
        "approval_timeout_action": "approve",
    }
    order = RunOrder(thread_id=thread_id, request=QUESTION, options=options, new_thread=True)
    async with claim_run(agent.graph, OwnConnectionLocks(agent.db.url), settings, order) as run:
        await run.run(lambda _: None)
    checkpoint_id = dict(await waiting_checkpoints(agent.db.pool))[thread_id]
    snapshot = await agent.graph.aget_state(thread_config(thread_id))
    terms = terms_of(snapshot.interrupts[0].value)
    assert terms is not None

    watches = [
        DeadlineWatch(agent.graph, agent.db.pool, OwnConnectionLocks(agent.db.url), settings)
        for _ in range(2)
    ]
    answered = await asyncio.gather(*(w.answer(thread_id, checkpoint_id, terms) for w in watches))
    assert sorted(answered) == [False, True]
    assert not await watches[0].answer(thread_id, checkpoint_id, terms)  # nothing left
    values = (await agent.graph.aget_state(thread_config(thread_id))).values
    assert values["status"] == "done"
    assert [(a["decision"], a["by"]) for a in values["approvals"]] == [("approve", "deadline")]
