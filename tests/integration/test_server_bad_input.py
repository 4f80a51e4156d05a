"""Hostile and broken input against a real server: every request gets a clear 4xx with a
JSON error body, none a 500, and none of them writes anything."""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.fakes import MakeModel
from tests.integration.server_harness import RunningServer

QUESTION = "What is A? What is B?"
ODD_IDS = [
    "x' OR '1'='1",
    "1; DROP TABLE checkpoints; --",
    "..%2F..%2Fetc%2Fpasswd",
    "thread\u202eevil",
    "漢字のスレッド",
    "a" * 200,
]


@pytest.fixture
async def client(api: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as c:
        yield c


async def _stored(url: str) -> int:
    """Rows in the checkpoint and ownership tables, for 'nothing was written'."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT (SELECT count(*) FROM checkpoints) + (SELECT count(*) FROM checkpoint_writes)"
            " + (SELECT count(*) FROM agentgraph_thread_owners)"
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


def _refused(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    body: dict[str, Any] = response.json()
    assert body["error"], body
    assert body["message"], body
    return body


async def test_broken_bodies_are_refused_and_write_nothing(
    embedded_url: str, client: httpx.AsyncClient
) -> None:
    before = await _stored(embedded_url)
    deep = "[" * 100_000 + "]" * 100_000
    deep_object = '{"question": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}"
    json_headers = {"content-type": "application/json"}
    for path in ("/api/v1/agent/run", "/api/v1/agent/run.stream", "/agent/invoke"):
        for content in (
            deep,
            deep_object,
            b'{"question": "\xff\xfe broken utf-8"}',
            b"\x00\x01\x02",
            '{"question": "x", "question": 5}',
            "[" + ",".join(["1"] * 200_000) + "]",
        ):
            answer = await client.post(path, content=content, headers=json_headers)
            _refused(answer, 400, 422)
    # Unknown fields and wrong types, each named in the message.
    for body, named in (
        ({"question": "x", "temperature": 2}, "temperature"),
        ({"question": "x", "approval": "sometimes"}, "approval"),
        ({"question": ["x"]}, "question"),
        ({"question": "x", "max_steps": -1}, "max_steps"),
        ({"question": "x", "thread_id": "t" * 10_000}, "thread_id"),
        ({"question": "x", "collection": "../../etc"}, "collection"),
    ):
        answer = await client.post("/api/v1/agent/run", json=body)
        assert named in _refused(answer, 422)["message"], answer.text
    # Bodies LangServe itself would fail on with a TypeError (found by the fuzzing test).
    for path, body, named in (
        ("/agent/invoke", {"input": {"question": "x"}, "config": None}, "config"),
        ("/agent/batch", {"inputs": None, "config": []}, "inputs"),
        ("/agent/batch", {"inputs": [{"question": "x"}], "config": [None]}, "config"),
        ("/agent/batch", {"inputs": [{}]}, "question"),
    ):
        answer = await client.post(path, json=body)
        assert named in _refused(answer, 422)["message"], answer.text
    # A stream says it on its 200, as an `error` event, which RemoteRunnable raises.
    stream = await client.post("/agent/stream", json={"input": {"question": "x"}, "config": [1]})
    assert stream.status_code == 200
    assert "event: error" in stream.text
    assert '"status_code": 422' in stream.text
    assert "config: must be an object" in stream.text
    assert await _stored(embedded_url) == before


async def test_odd_and_huge_thread_ids_are_404_or_422(
    embedded_url: str, client: httpx.AsyncClient
) -> None:
    before = await _stored(embedded_url)
    for thread_id in ODD_IDS:
        quoted = httpx.URL("/api/v1/threads/").join(thread_id.replace("/", "%2F"))
        for method, suffix, body in (
            ("GET", "", None),
            ("GET", "/history", None),
            ("DELETE", "", None),
            ("POST", "/resume", {"decision": "approve"}),
            ("POST", "/continue", None),
            ("POST", "/fork", {"checkpoint_id": "x"}),
        ):
            answer = await client.request(method, f"{quoted}{suffix}", json=body)
            _refused(answer, 404)
    huge = "t" * 10_000
    for method, path in (
        ("GET", f"/api/v1/threads/{huge}"),
        ("DELETE", f"/api/v1/threads/{huge}"),
        ("POST", f"/api/v1/approvals/{huge}/approve"),
        ("GET", "/api/v1/threads/%00nul"),
        ("GET", "/api/v1/threads/bell%07"),
        ("POST", "/api/v1/threads/%00/continue"),
    ):
        _refused(await client.request(method, path), 422)
    control = await client.post(
        "/api/v1/agent/run", json={"question": "x", "thread_id": "a\u0000b"}
    )
    assert "control characters" in _refused(control, 422)["message"]
    langserve = await client.post(
        "/agent/invoke",
        json={"input": {"question": "x"}, "config": {"configurable": {"thread_id": "a\u0000"}}},
    )
    assert "control characters" in _refused(langserve, 422)["message"]
    assert await _stored(embedded_url) == before


async def test_a_bad_plan_edit_is_refused_and_the_thread_still_waits(
    embedded_url: str, client: httpx.AsyncClient, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Edited answer.")
    started = await client.post(
        "/api/v1/agent/run",
        json={"question": QUESTION, "model": spec, "approval": "always", "mode": "plan"},
    )
    thread_id = started.json()["thread_id"]
    plan = started.json()["pending_approval"]["plan"]
    before = await _stored(embedded_url)

    def step(i: int, depends_on: list[str]) -> dict[str, Any]:
        return {
            "id": f"s{i}",
            "kind": "reasoning",
            "instruction": f"Step {i}?",
            "depends_on": depends_on,
            "requires_approval": False,
        }

    cycle = {**plan, "steps": [step(1, []), step(2, ["s3"]), step(3, ["s2"])]}
    thousand = {**plan, "steps": [step(i, []) for i in range(1, 1001)]}
    dangling = {**plan, "steps": [step(1, ["s9"])]}
    duplicate = {**plan, "steps": [step(1, []), step(1, [])]}
    for edited, why in (
        (cycle, "cycle"),
        (thousand, "steps"),
        (dangling, "s9"),
        (duplicate, "s1"),
        ({"goal": "no steps"}, "steps"),
        ("not a plan", "plan"),
    ):
        answer = await client.post(
            f"/api/v1/threads/{thread_id}/resume", json={"decision": "edit", "plan": edited}
        )
        message = _refused(answer, 400, 409, 422)["message"]
        assert why in message, (why, message[:300])
    assert await _stored(embedded_url) == before
    view = (await client.get(f"/api/v1/threads/{thread_id}")).json()
    assert view["status"] == "interrupted"
    assert view["pending_approval"]["plan"] == plan
    # A good edit still goes through afterwards.
    good = {**plan, "steps": plan["steps"][:1]}
    done = await client.post(
        f"/api/v1/threads/{thread_id}/resume", json={"decision": "edit", "plan": good}
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "done"
    assert json.dumps(done.json()["plan"]["steps"]) == json.dumps(good["steps"])
