"""API keys, scopes and tenants on a real server with authentication required, against real
Postgres: nobody without a key, a key only where its scopes reach, a tenant's threads hidden
(404) from every other tenant on every route, and who approved recorded."""

import json
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from langserve import RemoteRunnable

from app.auth import Keys
from app.pg import open_pool
from app.settings import Settings
from bench.common import free_port, wait_ready
from tests.fakes import MakeModel
from tests.integration.conftest import Cli
from tests.integration.server_harness import RunningServer, running_server

QUESTION = "What is A? What is B?"


@pytest.fixture(scope="module")
def secured(settings: Settings, embedded_url: str) -> Iterator[RunningServer]:
    """The server with AGENTGRAPH_AUTH=required, on this session's database."""
    with running_server(settings.model_copy(update={"auth": "required"}), embedded_url) as s:
        yield s


@pytest.fixture
async def keys(embedded_url: str) -> AsyncIterator[Keys]:
    pool = await open_pool(embedded_url, max_size=2)
    store = Keys(pool)
    await store.setup()
    yield store
    await pool.close()


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _interrupted_run(client: httpx.AsyncClient, secret: str, model: str) -> dict[str, Any]:
    started = await client.post(
        "/api/v1/agent/run",
        json={"question": QUESTION, "model": model, "approval": "always", "mode": "plan"},
        headers=_auth(secret),
    )
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "interrupted"
    body: dict[str, Any] = started.json()
    return body


async def test_no_key_or_a_bad_one_gets_401_and_health_stays_open(
    secured: RunningServer, keys: Keys
) -> None:
    _, revoked = await keys.create(f"t-{uuid.uuid4().hex[:6]}", ["runs"])
    assert await keys.revoke(revoked.split("_")[1])
    _, expired = await keys.create(
        f"t-{uuid.uuid4().hex[:6]}", ["runs"], expires_at=datetime.now(UTC) - timedelta(days=1)
    )
    async with httpx.AsyncClient(base_url=secured.base_url, timeout=30) as client:
        for headers, why in (
            ({}, "an API key is required"),
            ({"Authorization": "Bearer nonsense"}, "malformed API key"),
            ({"X-API-Key": "agk_0123456789abcdef_" + "x" * 40}, "unknown API key"),
            (_auth(revoked), "revoked"),
            (_auth(expired), "expired"),
        ):
            for method, path in (
                ("GET", "/api/v1/approvals"),
                ("GET", "/api/v1/threads/anything"),
                ("POST", "/api/v1/agent/run"),
                ("POST", "/agent/invoke"),
            ):
                answer = await client.request(method, path, headers=headers, json={})
                assert answer.status_code == 401, (path, answer.text)
                assert why in answer.json()["message"], answer.text
                assert answer.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_another_tenants_thread_is_404_on_every_route(
    secured: RunningServer, keys: Keys, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Tenant answer.")
    _, alice = await keys.create(f"alice-{uuid.uuid4().hex[:6]}", ["runs", "approvals"])
    _, bob = await keys.create(f"bob-{uuid.uuid4().hex[:6]}", ["runs", "approvals"])
    async with httpx.AsyncClient(base_url=secured.base_url, timeout=60) as client:
        thread_id = (await _interrupted_run(client, alice, spec))["thread_id"]
        checkpoint = (
            await client.get(f"/api/v1/threads/{thread_id}/history", headers=_auth(alice))
        ).json()["checkpoints"][0]["checkpoint_id"]
        tries = [
            ("GET", f"/api/v1/threads/{thread_id}", None),
            ("GET", f"/api/v1/threads/{thread_id}/history", None),
            ("POST", f"/api/v1/threads/{thread_id}/resume", {"decision": "approve"}),
            ("POST", f"/api/v1/threads/{thread_id}/resume.stream", {"decision": "approve"}),
            ("POST", f"/api/v1/threads/{thread_id}/continue", None),
            ("POST", f"/api/v1/threads/{thread_id}/continue.stream", None),
            ("POST", f"/api/v1/threads/{thread_id}/fork", {"checkpoint_id": checkpoint}),
            ("POST", f"/api/v1/approvals/{thread_id}/approve", None),
            ("POST", f"/api/v1/approvals/{thread_id}/reject", {"reason": "no"}),
            ("POST", "/api/v1/agent/run", {"question": "x", "thread_id": thread_id}),
            ("POST", "/api/v1/agent/run.stream", {"question": "x", "thread_id": thread_id}),
        ]
        for method, path, body in tries:
            answer = await client.request(method, path, json=body, headers=_auth(bob))
            assert answer.status_code == 404, (path, answer.status_code, answer.text)
            assert "unknown thread" in answer.json()["message"]
        # The same 404 as a thread that does not exist: nothing tells them apart.
        missing = await client.get(f"/api/v1/threads/no-{uuid.uuid4().hex}", headers=_auth(bob))
        assert missing.status_code == 404
        # The inbox lists each tenant's own waiting threads only.
        theirs = await client.get("/api/v1/approvals", headers=_auth(bob))
        ours = await client.get("/api/v1/approvals", headers=_auth(alice))
        assert thread_id not in {i["thread_id"] for i in theirs.json()}
        assert thread_id in {i["thread_id"] for i in ours.json()}
        # Nothing Bob tried changed Alice's thread: it still waits for her.
        view = await client.get(f"/api/v1/threads/{thread_id}", headers=_auth(alice))
        assert view.json()["status"] == "interrupted"
        assert view.json()["request"] == QUESTION

    remote: RemoteRunnable[Any, Any] = RemoteRunnable(
        f"{secured.base_url}/agent/", headers=_auth(bob)
    )
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await remote.ainvoke(
            {"resume": {"decision": "approve"}}, config={"configurable": {"thread_id": thread_id}}
        )
    assert refused.value.response.status_code == 404
    await remote.async_client.aclose()


async def test_scopes_and_who_approved(
    secured: RunningServer, keys: Keys, make_model: MakeModel, cli: Cli
) -> None:
    spec, _ = make_model(reply="Approved answer.")
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    # A key made with the real CLI, shown once.
    made = cli.json("keys", "create", "--tenant", tenant, "--scopes", "runs")
    runs_only = made["key"]
    assert made["scopes"] == ["runs"]
    listed = cli.json("keys", "list")
    assert made["id"] in {k["id"] for k in listed["keys"]}
    assert runs_only not in json.dumps(listed)  # no secret is ever listed
    assert all("key" not in row for row in listed["keys"])
    approver_info, approver = await keys.create(tenant, ["approvals", "runs"])
    async with httpx.AsyncClient(base_url=secured.base_url, timeout=60) as client:
        thread_id = (await _interrupted_run(client, runs_only, spec))["thread_id"]
        refused = await client.post(
            f"/api/v1/approvals/{thread_id}/approve", headers=_auth(runs_only)
        )
        assert refused.status_code == 403, refused.text
        assert "no 'approvals' scope" in refused.json()["message"]
        done = await client.post(f"/api/v1/approvals/{thread_id}/approve", headers=_auth(approver))
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "done"
        report = done.json()["report"]
        [approval] = report["approvals"]
        assert approval["decision"] == "approve"
        assert approval["by"] == f"{tenant}/{approver_info.id}"
        assert approval["at"]
    revoked = cli.run("keys", "revoke", made["id"])
    assert revoked.returncode == 0, revoked.stderr
    again = cli.run("keys", "revoke", made["id"])
    assert again.returncode == 1
    assert "no live key" in again.stderr


async def test_a_thread_nobody_owns_is_an_admins_only(
    secured: RunningServer, keys: Keys, make_model: MakeModel
) -> None:
    """A thread stored before keys were required has no owner: no tenant may take it by
    running on it; an admin key sees it."""
    spec, _ = make_model(reply="Old answer.")
    _, alice = await keys.create(f"alice-{uuid.uuid4().hex[:6]}", ["runs", "approvals"])
    _, mallory = await keys.create(f"mallory-{uuid.uuid4().hex[:6]}", ["runs", "approvals"])
    _, admin = await keys.create(f"ops-{uuid.uuid4().hex[:6]}", ["runs", "admin"])
    async with httpx.AsyncClient(base_url=secured.base_url, timeout=60) as client:
        thread_id = (await _interrupted_run(client, alice, spec))["thread_id"]
        async with keys.pool.connection() as conn:
            await conn.execute(
                "DELETE FROM agentgraph_thread_owners WHERE thread_id = %s", (thread_id,)
            )
        taken = await client.post(
            "/api/v1/agent/run",
            json={"question": "Mine now?", "thread_id": thread_id, "model": spec},
            headers=_auth(mallory),
        )
        assert taken.status_code == 404, taken.text
        assert (
            await client.get(f"/api/v1/threads/{thread_id}", headers=_auth(mallory))
        ).status_code == 404
        seen = await client.get(f"/api/v1/threads/{thread_id}", headers=_auth(admin))
        assert seen.status_code == 200, seen.text
        assert seen.json()["request"] == QUESTION


def test_serve_on_a_public_address_requires_keys(cli: Cli) -> None:
    """`agentgraph serve --host 0.0.0.0` with AGENTGRAPH_AUTH unset asks for keys."""
    port = free_port()
    proc = cli.start("serve", "--host", "0.0.0.0", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, f"{base}/readyz", timeout_s=120, name="the server", output=lambda: "")
        answer = httpx.get(f"{base}/api/v1/approvals", timeout=30)
        assert answer.status_code == 401, answer.text
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert "API keys are required" in output
