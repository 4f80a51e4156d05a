"""Bad bodies, unknown ids, oversized bodies and conflicts get their documented status codes
with a JSON error body; nothing a client sends produces a 500."""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fakes import MakeModel
from tests.integration.server_harness import RunningServer, open_run_stream

UNKNOWN = "no-such-thread-0000"


@pytest.fixture
async def client(api: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as c:
        yield c


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]
    assert body["message"]
    return body


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/api/v1/threads/{UNKNOWN}", None),
        ("GET", f"/api/v1/threads/{UNKNOWN}/history", None),
        ("POST", f"/api/v1/threads/{UNKNOWN}/resume", {"decision": "approve"}),
        ("POST", f"/api/v1/threads/{UNKNOWN}/resume.stream", {"decision": "approve"}),
        ("POST", f"/api/v1/threads/{UNKNOWN}/fork", {"checkpoint_id": "x"}),
        ("POST", f"/api/v1/approvals/{UNKNOWN}/approve", None),
        ("POST", f"/api/v1/approvals/{UNKNOWN}/reject", {"reason": "no"}),
    ],
)
async def test_unknown_thread_is_404(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    body_json = _error(await client.request(method, path, json=body), 404)
    assert UNKNOWN in body_json["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": 42}, "question"),
        ({"question": "x", "approval": "sometimes"}, "approval"),
        ({"question": "x", "max_replans": -1}, "max_replans"),
        ({"question": "x", "token_budget": "lots"}, "token_budget"),
        ({"question": "x", "colour": "blue"}, "colour"),
        ({"question": "x", "thread_id": ""}, "thread_id"),
        ([1, 2, 3], "body"),
        ("just a string", "body"),
        (None, "body"),
    ],
)
async def test_bad_run_body_is_422_with_field_messages(
    client: httpx.AsyncClient, body: Any, field: str
) -> None:
    for path in ("/api/v1/agent/run", "/api/v1/agent/run.stream"):
        error = _error(await client.post(path, json=body), 422)
        assert field in error["message"], error


async def test_malformed_json_and_wrong_content_are_422(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    _error(await client.post("/api/v1/agent/run", content=b"{not json", headers=headers), 422)
    # Bytes that are not UTF-8: a 400 that says so, not a crash.
    _error(await client.post("/api/v1/agent/run", content=b"\xff\xfe\x00", headers=headers), 400)
    _error(await client.post("/api/v1/agent/run", content=b"question=x"), 422)


async def test_bad_query_parameters_are_422(client: httpx.AsyncClient) -> None:
    _error(await client.get("/api/v1/approvals", params={"status": "done"}), 422)
    _error(await client.get("/api/v1/approvals", params={"limit": 0}), 422)
    _error(await client.get(f"/api/v1/threads/{UNKNOWN}/history", params={"limit": "x"}), 422)


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    big = {"question": "x" * 2_000_000}
    _error(await client.post("/api/v1/agent/run", json=big), 413)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"question": "'
        for _ in range(40):
            yield b"y" * 50_000
        yield b'"}'

    # No Content-Length: the limit applies while the body streams in.
    chunked = await client.post(
        "/api/v1/agent/run", content=chunks(), headers={"content-type": "application/json"}
    )
    _error(chunked, 413)


async def test_bad_decisions_and_conflicts(
    client: httpx.AsyncClient, make_model: MakeModel
) -> None:
    spec, _ = make_model()
    started = await client.post(
        "/api/v1/agent/run",
        json={"question": "What is A? What is B?", "model": spec, "approval": "always"},
    )
    thread_id = started.json()["thread_id"]
    assert started.json()["status"] == "interrupted"
    resume = f"/api/v1/threads/{thread_id}/resume"

    _error(await client.post(resume, json={"decision": "maybe"}), 422)
    _error(await client.post(resume, json={"decision": "edit"}), 422)
    cyclic = {
        "goal": "g",
        "steps": [
            {"id": "a", "kind": "reasoning", "instruction": "x", "depends_on": ["b"]},
            {"id": "b", "kind": "reasoning", "instruction": "y", "depends_on": ["a"]},
        ],
    }
    edit = _error(await client.post(resume, json={"decision": "edit", "plan": cyclic}), 422)
    assert "plan" in edit["message"]

    # A new question on a thread that waits for approval: resume it instead.
    busy = await client.post(
        "/api/v1/agent/run", json={"question": "Another?", "thread_id": thread_id, "model": spec}
    )
    assert "resume" in _error(busy, 409)["message"]

    done = await client.post(resume, json={"decision": "approve"})
    assert done.json()["status"] == "done"
    # Nothing waits any more.
    assert (
        "nothing to resume"
        in _error(await client.post(resume, json={"decision": "approve"}), 409)["message"]
    )
    _error(
        await client.post(f"/api/v1/threads/{thread_id}/fork", json={"checkpoint_id": "nope"}),
        404,
    )
    history = (await client.get(f"/api/v1/threads/{thread_id}/history")).json()["checkpoints"]
    bad_values = await client.post(
        f"/api/v1/threads/{thread_id}/fork",
        json={"checkpoint_id": history[1]["checkpoint_id"], "values": {"no_such_key": 1}},
    )
    assert bad_values.status_code in (200, 422), bad_values.text


async def test_health_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/api/v1/agent/run.stream",
        "/api/v1/agent/run",
        "/api/v1/threads/{thread_id}",
        "/api/v1/threads/{thread_id}/history",
        "/api/v1/threads/{thread_id}/resume",
        "/api/v1/threads/{thread_id}/resume.stream",
        "/api/v1/threads/{thread_id}/fork",
        "/api/v1/approvals",
        "/api/v1/approvals/{thread_id}/approve",
        "/api/v1/approvals/{thread_id}/reject",
        "/agent/invoke",
        "/agent/stream",
        "/agent/stream_events",
    ):
        assert path in spec["paths"], path
    assert (await client.get("/docs")).status_code == 200
    _error(await client.get("/no/such/route"), 404)
    _error(await client.put("/api/v1/agent/run"), 405)


async def test_a_run_on_a_running_thread_is_409(
    client: httpx.AsyncClient, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Slow.", delay_s=1.0)
    body = {"question": "What is A?", "model": spec, "approval": "never"}
    async with open_run_stream(client, body) as response:
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data:") and "thread_id" in line:
                thread_id = json.loads(line[len("data:") :])["thread_id"]
                break
        busy = await client.post("/api/v1/agent/run", json={**body, "thread_id": thread_id})
        assert "is running" in _error(busy, 409)["message"]
        resume = await client.post(
            f"/api/v1/threads/{thread_id}/resume", json={"decision": "approve"}
        )
        _error(resume, 409)
        async for _ in lines:
            pass  # the first run goes on to its end
    done = (await client.get(f"/api/v1/threads/{thread_id}")).json()
    assert done["status"] == "done"
