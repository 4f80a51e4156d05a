"""`GET /api/v1/threads` over real uvicorn and Postgres: recent threads with their status,
question, tokens, cost, age and who started them, filtered by status, and only the caller's
tenant's; a thread's step results and verdict; an edited plan's problems located."""

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.auth import Keys
from app.settings import Settings
from tests.fakes import MakeModel
from tests.integration.server_harness import RunningServer, running_server

QUESTION = "What is A? What is B?"


@pytest.fixture(scope="module")
def secured(settings: Settings, embedded_url: str) -> Iterator[RunningServer]:
    """The server with API keys required, on this session's database."""
    with running_server(settings.model_copy(update={"auth": "required"}), embedded_url) as s:
        yield s


async def _run(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await client.post("/api/v1/agent/run", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _listed(
    client: httpx.AsyncClient, query: str = "", headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/threads{query}", headers=headers)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


async def test_recent_threads_are_listed_newest_first_and_filtered_by_status(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Listed answer {n}.")
    body = {"question": QUESTION, "model": spec, "mode": "plan"}
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        done = await _run(client, {**body, "approval": "never"})
        waiting = await _run(client, {**body, "approval": "always"})
        assert (done["status"], waiting["status"]) == ("done", "interrupted")

        ours = {done["thread_id"], waiting["thread_id"]}
        listed = [t for t in await _listed(client, "?limit=500") if t["thread_id"] in ours]
        assert [t["thread_id"] for t in listed] == [waiting["thread_id"], done["thread_id"]]
        latest, first = listed
        assert latest["status"] == "interrupted"
        assert first["status"] == "done"
        assert first["question"] == QUESTION
        assert first["total_tokens"] == done["report"]["total_tokens"] > 0
        assert first["total_cost"] == done["report"]["total_cost"]
        assert first["started_by"] is None  # keys off, run by the streamed API
        assert 0 <= latest["age_s"] <= first["age_s"] < 60
        assert first["created_at"] <= first["updated_at"]

        interrupted = {t["thread_id"] for t in await _listed(client, "?status=interrupted")}
        finished = {t["thread_id"] for t in await _listed(client, "?status=done&limit=500")}
        assert waiting["thread_id"] in interrupted
        assert done["thread_id"] not in interrupted
        assert done["thread_id"] in finished
        assert waiting["thread_id"] not in finished
        assert len(await _listed(client, "?limit=1")) == 1
        refused = await client.get("/api/v1/threads?status=asleep")
        assert refused.status_code == 422

        thread = (await client.get(f"/api/v1/threads/{done['thread_id']}")).json()
        assert [r["step_id"] for r in thread["results"]] == ["s1", "s2"]
        assert all(r["status"] == "done" and r["output"] for r in thread["results"])
        assert thread["critique"]["verdict"] == "accept"


async def test_an_edited_plan_s_problems_say_where_they_are(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Edited.")
    body = {"question": QUESTION, "model": spec, "mode": "plan", "approval": "always"}
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        waiting = await _run(client, body)
        plan = waiting["plan"]
        steps = [
            {**plan["steps"][0], "instruction": ""},
            {**plan["steps"][1], "depends_on": ["s9"]},
        ]
        path = f"/api/v1/threads/{waiting['thread_id']}/resume"
        empty = await client.post(path, json={"decision": "edit", "plan": {**plan, "steps": steps}})
        assert empty.status_code == 422
        [problem] = empty.json()["detail"]
        assert problem["loc"] == ["plan", "steps", 0, "instruction"]

        steps[0] = plan["steps"][0]
        unknown = await client.post(
            path, json={"decision": "edit", "plan": {**plan, "steps": steps}}
        )
        assert unknown.status_code == 422
        assert unknown.json()["detail"] == [
            {
                "loc": ["plan", "steps", 1, "depends_on"],
                "msg": "step s2 depends on unknown step 's9'",
            }
        ]
        assert "depends on unknown step 's9'" in unknown.json()["message"]


async def test_a_tenant_lists_only_its_threads_and_an_admin_every_one(
    secured: RunningServer, keys: Keys, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Tenant answer.")
    body = {"question": QUESTION, "model": spec, "mode": "plan", "approval": "never"}
    tenants = {name: f"list-{name}-{uuid.uuid4().hex[:6]}" for name in ("a", "b")}
    secrets = {}
    for name, tenant in tenants.items():
        _, secrets[name] = await keys.create(tenant, ["runs"])
    _, admin = await keys.create("list-admin", ["runs", "admin"])
    _, approver = await keys.create("list-approver", ["approvals"])
    auth = {name: {"Authorization": f"Bearer {s}"} for name, s in secrets.items()}
    async with httpx.AsyncClient(base_url=secured.base_url, timeout=60) as client:
        ran = {name: await _run(client, body, auth[name]) for name in auth}
        for name, other in (("a", "b"), ("b", "a")):
            listed = await _listed(client, headers=auth[name])
            assert [t["thread_id"] for t in listed] == [ran[name]["thread_id"]]
            assert listed[0]["started_by"] == tenants[name]  # a streamed run: its tenant
            assert ran[other]["thread_id"] not in {t["thread_id"] for t in listed}
        everything = await _listed(client, "?limit=500", {"Authorization": f"Bearer {admin}"})
        assert {ran["a"]["thread_id"], ran["b"]["thread_id"]} <= {
            t["thread_id"] for t in everything
        }
        assert (await client.get("/api/v1/threads")).status_code == 401
        no_runs = await client.get("/api/v1/threads", headers={"X-API-Key": approver})
        assert no_runs.status_code == 403
