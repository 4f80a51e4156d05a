"""API keys, scopes and tenants on a real server with authentication required, against real
Postgres: nobody without a key, a key only where its scopes reach, a tenant's threads hidden
(404) from every other tenant on every route, and who approved recorded."""

import asyncio
import json
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from langserve import RemoteRunnable

from app.auth import KeyLimits, Keys
from app.settings import Settings, get_settings
from bench.common import free_port, wait_ready
from tests.fakes import MakeModel, register_fakes, scripted_spec
from tests.integration.conftest import Cli
from tests.integration.server_harness import RunningServer, running_server, wait_for

QUESTION = "What is A? What is B?"


@pytest.fixture(scope="module")
def secured(settings: Settings, embedded_url: str) -> Iterator[RunningServer]:
    """The server with AGENTGRAPH_AUTH=required, on this session's database."""
    with running_server(settings.model_copy(update={"auth": "required"}), embedded_url) as s:
        yield s


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


async def test_a_burst_over_a_keys_rate_gets_429_on_every_server_and_retry_after_works(
    secured: RunningServer, keys: Keys, settings: Settings, embedded_url: str
) -> None:
    """A key of 30 requests a minute, sending 40 at once across two servers on one database:
    30 go through, the rest get 429 with a Retry-After that, honoured, lets the next one in."""
    _, limited = await keys.create(
        f"burst-{uuid.uuid4().hex[:6]}", ["runs"], limits=KeyLimits(rate_per_minute=30)
    )
    _, other = await keys.create(f"calm-{uuid.uuid4().hex[:6]}", ["runs"])
    second_settings = settings.model_copy(update={"auth": "required"})
    with running_server(second_settings, embedded_url) as second:
        bases = [secured.base_url, second.base_url]
        async with httpx.AsyncClient(timeout=30) as client:
            answers = [
                await client.get(f"{bases[i % 2]}/api/v1/approvals", headers=_auth(limited))
                for i in range(40)
            ]
            statuses = [a.status_code for a in answers]
            assert set(statuses) == {200, 429}, statuses
            # The bucket refills one request each 2 s; the burst itself took a little time.
            assert 30 <= statuses.count(200) <= 32, statuses
            assert statuses[:30] == [200] * 30
            refused = [a for a in answers if a.status_code == 429]
            for a in refused:
                assert a.headers["retry-after"] in {"1", "2"}, a.headers
                assert "30 requests a minute" in a.json()["message"]
            # Another key is not held back by this one.
            calm = await client.get(f"{bases[1]}/api/v1/approvals", headers=_auth(other))
            assert calm.status_code == 200
            await asyncio.sleep(int(refused[-1].headers["retry-after"]))
            again = await client.get(f"{bases[0]}/api/v1/approvals", headers=_auth(limited))
            assert again.status_code == 200, again.text


async def test_a_keys_concurrent_runs_are_capped_across_servers(
    secured: RunningServer, keys: Keys, settings: Settings, embedded_url: str, tmp_path: Path
) -> None:
    """A key allowed one run at once: while its run is held in its model call on one server,
    a second run of the key on another server gets 429; another key still runs; once the
    first run ends, the key runs again."""
    register_fakes()  # the servers run in this process
    gate = tmp_path / "gate"
    held = scripted_spec(reply="Held answer.", gate_file=str(gate))
    quick = scripted_spec(reply="Quick answer.")
    _, single = await keys.create(
        f"one-{uuid.uuid4().hex[:6]}", ["runs"], limits=KeyLimits(concurrent_runs=1)
    )
    _, other = await keys.create(f"free-{uuid.uuid4().hex[:6]}", ["runs"])
    body = {"question": "What is A?", "approval": "never", "mode": "plan"}
    second_settings = settings.model_copy(update={"auth": "required"})
    with running_server(second_settings, embedded_url) as second:
        async with httpx.AsyncClient(timeout=60) as client:
            first = asyncio.create_task(
                client.post(
                    f"{secured.base_url}/api/v1/agent/run",
                    json={**body, "model": held},
                    headers=_auth(single),
                )
            )

            async def first_is_running() -> bool:
                assert not first.done(), (await first).text
                view = await client.get(
                    f"{secured.base_url}/api/v1/approvals", headers=_auth(single)
                )
                assert view.status_code == 200
                async with keys.pool.connection() as conn:
                    cursor = await conn.execute(
                        "SELECT count(*) AS n FROM pg_locks"
                        " WHERE locktype = 'advisory' AND objsubid = 2 AND granted"
                    )
                    row = await cursor.fetchone()
                return bool(row and row["n"] >= 1)

            await wait_for(first_is_running, within_s=30)
            refused = await client.post(
                f"{second.base_url}/api/v1/agent/run",
                json={**body, "model": quick},
                headers=_auth(single),
            )
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "5"
            assert "1 runs in flight" in refused.json()["message"]
            free = await client.post(
                f"{second.base_url}/api/v1/agent/run",
                json={**body, "model": quick},
                headers=_auth(other),
            )
            assert free.status_code == 200, free.text
            assert free.json()["status"] == "done"
            gate.touch()
            assert (await first).json()["status"] == "done"
            again = await client.post(
                f"{second.base_url}/api/v1/agent/run",
                json={**body, "model": quick},
                headers=_auth(single),
            )
            assert again.status_code == 200, again.text
            assert again.json()["status"] == "done"


async def test_a_keys_daily_token_budget_stops_runs_between_steps_then_refuses_them(
    secured: RunningServer, keys: Keys, make_model: MakeModel, cli: Cli
) -> None:
    """A key's runs are charged what they spend. A run that would overrun what is left of
    the key's day stops between steps with the key's budget as its reason; once the day's
    budget is spent, a new run gets 429 with Retry-After until midnight UTC."""
    spec, _ = make_model(reply="A budgeted answer.")
    body = {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
    probe, probe_secret = await keys.create(
        f"probe-{uuid.uuid4().hex[:6]}", ["runs"], limits=KeyLimits(daily_tokens=1_000_000)
    )
    async with httpx.AsyncClient(base_url=secured.base_url, timeout=60) as client:
        whole = await client.post("/api/v1/agent/run", json=body, headers=_auth(probe_secret))
        assert whole.json()["status"] == "done", whole.text
        run_tokens = whole.json()["report"]["total_tokens"]
        assert (await keys.spent_today(probe.id)).tokens == run_tokens

        # Room for one whole run and 5 tokens more, in a key made with the real CLI.
        made = cli.json(
            "keys",
            "create",
            "--tenant",
            f"budget-{uuid.uuid4().hex[:6]}",
            "--daily-tokens",
            str(run_tokens + 5),
        )
        assert made["daily_tokens"] == run_tokens + 5
        secret = made["key"]
        first = await client.post("/api/v1/agent/run", json=body, headers=_auth(secret))
        assert first.json()["status"] == "done", first.text
        assert not first.json()["report"]["budget_exhausted"]

        second = await client.post("/api/v1/agent/run", json=body, headers=_auth(secret))
        report = second.json()["report"]
        assert report["budget_exhausted"], second.text
        assert report["token_budget"] == 5
        assert report["verdict_reason"].startswith("API key's daily budget exhausted")
        assert "Stopped early: API key's daily budget exhausted" in second.json()["answer"]
        spent = await keys.spent_today(made["id"])
        assert spent.tokens == run_tokens + report["total_tokens"] > run_tokens + 5

        refused = await client.post("/api/v1/agent/run", json=body, headers=_auth(secret))
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "BudgetExceededError"
        assert f"spent its {run_tokens + 5} tokens of today" in refused.json()["message"]
        until_midnight = (
            datetime.now(UTC).replace(hour=0, minute=0, second=0) + timedelta(days=1)
        ) - datetime.now(UTC)
        assert abs(int(refused.headers["retry-after"]) - until_midnight.total_seconds()) < 60


async def test_a_keys_daily_cost_budget_caps_its_runs_at_the_models_price(
    secured: RunningServer, keys: Keys, make_model: MakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a price of 1 a token, a daily cost budget of 5 lets a run spend 5 tokens, then the
    key is refused for the day."""
    spec, _ = make_model(reply="A priced answer.")
    price = {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000}
    monkeypatch.setenv("AGENTGRAPH_PRICES", json.dumps({spec: price}))
    get_settings.cache_clear()
    try:
        key, secret = await keys.create(
            f"cost-{uuid.uuid4().hex[:6]}", ["runs"], limits=KeyLimits(daily_cost=5.0)
        )
        body = {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
        async with httpx.AsyncClient(base_url=secured.base_url, timeout=60) as client:
            run = await client.post("/api/v1/agent/run", json=body, headers=_auth(secret))
            report = run.json()["report"]
            assert report["token_budget"] == 5, run.text
            assert report["budget_exhausted"]
            spent = await keys.spent_today(key.id)
            assert spent.cost == pytest.approx(report["total_cost"]) == report["total_tokens"]
            refused = await client.post("/api/v1/agent/run", json=body, headers=_auth(secret))
            assert refused.status_code == 429, refused.text
            assert "spent its budget of 5 of today" in refused.json()["message"]
    finally:
        monkeypatch.delenv("AGENTGRAPH_PRICES")
        get_settings.cache_clear()


async def test_with_redis_configured_request_rates_are_counted_there(
    settings: Settings, embedded_url: str, keys: Keys
) -> None:
    """AGENTGRAPH_REDIS_URL: two servers count one key's requests in the machine's Redis
    (not in Postgres), so a burst over its rate across both is refused with 429."""
    import redis.asyncio as aioredis

    url = "redis://127.0.0.1:6379/15"
    info, secret = await keys.create(
        f"redis-{uuid.uuid4().hex[:6]}", ["runs"], limits=KeyLimits(rate_per_minute=10)
    )
    with_redis = settings.model_copy(update={"auth": "required", "redis_url": url})
    with (
        running_server(with_redis, embedded_url) as one,
        running_server(with_redis, embedded_url) as two,
    ):
        async with httpx.AsyncClient(timeout=30) as client:
            statuses = [
                (await client.get(f"{b}/api/v1/approvals", headers=_auth(secret))).status_code
                for b in [one.base_url, two.base_url] * 8
            ]
    assert statuses[:10] == [200] * 10, statuses
    assert statuses[10:].count(429) >= 5, statuses
    stored = aioredis.from_url(url)
    try:
        assert await stored.exists(f"agentgraph:rate:{info.id}")
    finally:
        await stored.aclose()
    async with keys.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) AS n FROM agentgraph_key_rate WHERE key_id = %s", (info.id,)
        )
        row = await cursor.fetchone()
    assert row is not None
    assert row["n"] == 0


async def test_the_openai_surface_takes_keys_and_hides_other_tenants(
    secured: RunningServer, keys: Keys, make_model: MakeModel
) -> None:
    import openai

    spec, _ = make_model(reply="Alice's answer.")
    _, alice = await keys.create(f"alice-{uuid.uuid4().hex[:6]}", ["runs", "approvals"])
    _, bob = await keys.create(f"bob-{uuid.uuid4().hex[:6]}", ["runs", "approvals"])
    base = f"{secured.base_url}/v1"
    as_alice = openai.AsyncOpenAI(base_url=base, api_key=alice, max_retries=0)
    as_bob = openai.AsyncOpenAI(base_url=base, api_key=bob, max_retries=0)
    nobody = openai.AsyncOpenAI(base_url=base, api_key="agk_0000000000000000_" + "x" * 30)
    with pytest.raises(openai.AuthenticationError) as refused:
        await nobody.models.list()
    assert refused.value.code == "invalid_api_key"

    raw = await as_alice.responses.with_raw_response.create(
        model=f"agentgraph:{spec}", input=QUESTION, extra_body={"agentgraph": {"approval": "never"}}
    )
    first, thread_id = raw.parse(), raw.headers["x-thread-id"]
    assert "Alice's answer." in first.output_text
    with pytest.raises(openai.NotFoundError):
        await as_bob.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        await as_bob.responses.create(
            model=f"agentgraph:{spec}", input="And B?", previous_response_id=first.id
        )
    with pytest.raises(openai.NotFoundError) as hidden:
        await as_bob.chat.completions.create(
            model=f"agentgraph:{spec}",
            messages=[{"role": "user", "content": "And C?"}],
            extra_headers={"X-Thread-Id": thread_id},
        )
    assert "unknown thread" in hidden.value.message
    # Resending Alice's conversation lands Bob on a thread of his own, not on hers.
    theirs = await as_bob.chat.completions.with_raw_response.create(
        model=f"agentgraph:{spec}",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"agentgraph": {"approval": "never"}},
    )
    ours = await as_alice.chat.completions.with_raw_response.create(
        model=f"agentgraph:{spec}",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"agentgraph": {"approval": "never"}},
    )
    assert theirs.headers["x-thread-id"] != ours.headers["x-thread-id"]
    assert (await as_alice.responses.retrieve(first.id)).output_text == first.output_text
    for client in (as_alice, as_bob, nobody):
        await client.close()


async def test_the_a2a_surface_declares_and_takes_keys_and_hides_other_tenants(
    secured: RunningServer, keys: Keys, make_model: MakeModel
) -> None:
    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_part
    from a2a.types import GetTaskRequest, Message, Role, SendMessageRequest, TaskState
    from a2a.utils.errors import TaskNotFoundError
    from google.protobuf.json_format import ParseDict
    from google.protobuf.struct_pb2 import Struct

    spec, _ = make_model(reply="Alice's task.")
    _, alice = await keys.create(f"alice-{uuid.uuid4().hex[:6]}", ["runs", "approvals"])
    _, bob = await keys.create(f"bob-{uuid.uuid4().hex[:6]}", ["runs", "approvals"])

    def message(context_id: str = "") -> Message:
        sent = Message(
            role=Role.ROLE_USER,
            parts=[new_text_part(QUESTION)],
            message_id=uuid.uuid4().hex,
            context_id=context_id,
        )
        options = {"agentgraph": {"approval": "never", "model": spec}}
        sent.metadata.CopyFrom(ParseDict(options, Struct()))
        return sent

    async with httpx.AsyncClient(base_url=secured.base_url, timeout=60) as http:
        card = (await http.get("/.well-known/agent-card.json")).json()
        assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
        assert card["securitySchemes"]["apiKey"]["apiKeySecurityScheme"]["name"] == "X-API-Key"
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}
        refused = await http.post("/a2a", json=rpc, headers={"A2A-Version": "1.0"})
        assert refused.status_code == 401

    async def client_of(http: httpx.AsyncClient) -> Any:
        return await create_client(secured.base_url, client_config=ClientConfig(httpx_client=http))

    async with (
        httpx.AsyncClient(timeout=60, headers=_auth(alice)) as as_alice,
        httpx.AsyncClient(timeout=60, headers={"X-API-Key": bob}) as as_bob,
    ):
        theirs, ours = await client_of(as_bob), await client_of(as_alice)
        events = [e async for e in ours.send_message(SendMessageRequest(message=message()))]
        done = events[-1].status_update
        assert done.status.state == TaskState.TASK_STATE_COMPLETED
        with pytest.raises(TaskNotFoundError):
            await theirs.get_task(GetTaskRequest(id=done.task_id))
        # Bob's message in Alice's context (her thread) fails as an unknown thread would.
        tried = [
            e
            async for e in theirs.send_message(SendMessageRequest(message=message(done.context_id)))
        ]
        failed = tried[-1].status_update.status
        assert failed.state == TaskState.TASK_STATE_FAILED
        assert "ThreadNotFoundError: unknown thread" in failed.message.parts[0].text
        mine = await ours.get_task(GetTaskRequest(id=done.task_id))
        assert mine.status.state == TaskState.TASK_STATE_COMPLETED
        view = await as_alice.get(f"{secured.base_url}/api/v1/threads/{done.context_id}")
        assert view.json()["report"]["approvals"] == []
        assert len(view.json()["plan_history"]) == 1  # Bob's message ran nothing on it


async def test_a_keys_daily_budget_holds_its_background_and_agent_api_runs(
    secured: RunningServer, keys: Keys, make_model: MakeModel
) -> None:
    """A background run of a budgeted key is capped to what the key has left when it is
    queued and charged by the worker that runs it; a LangGraph Agent API run is charged as a
    streamed one is; once the day's budget is spent, queueing gets 429."""
    spec, _ = make_model(reply="A queued answer.")
    body = {"question": QUESTION, "model": spec, "approval": "never", "mode": "plan"}
    key, secret = await keys.create(
        f"queued-{uuid.uuid4().hex[:6]}", ["runs"], limits=KeyLimits(daily_tokens=1_000_000)
    )
    async with httpx.AsyncClient(base_url=secured.base_url, timeout=60) as client:

        async def finished(run: dict[str, Any], secret: str) -> dict[str, Any]:
            url = f"/api/v1/threads/{run['thread_id']}/runs/{run['run_id']}"

            async def ended() -> bool:
                found = await client.get(url, headers=_auth(secret))
                return found.json()["status"] not in ("queued", "running")

            await wait_for(ended)
            thread = await client.get(f"/api/v1/threads/{run['thread_id']}", headers=_auth(secret))
            document: dict[str, Any] = thread.json()
            return document

        queued = await client.post("/api/v1/runs", json=body, headers=_auth(secret))
        assert queued.status_code == 202, queued.text
        thread = await finished(queued.json(), secret)
        assert thread["status"] == "done"
        run_tokens = thread["report"]["total_tokens"]
        assert (await keys.spent_today(key.id)).tokens == run_tokens

        waited = await client.post(
            "/runs/wait",
            json={
                "assistant_id": "agent",
                "input": {"request": QUESTION},
                "context": {"model": spec, "approval": "never", "mode": "plan"},
            },
            headers=_auth(secret),
        )
        assert waited.status_code == 200, waited.text
        assert waited.json()["status"] == "done"
        spent = (await keys.spent_today(key.id)).tokens
        assert spent == run_tokens + waited.json()["report"]["total_tokens"]

        made = await keys.create(
            f"tight-{uuid.uuid4().hex[:6]}", ["runs"], limits=KeyLimits(daily_tokens=5)
        )
        tight = made[1]
        capped = await client.post("/api/v1/runs", json=body, headers=_auth(tight))
        assert capped.status_code == 202, capped.text
        report = (await finished(capped.json(), tight))["report"]
        assert report["token_budget"] == 5
        assert report["budget_exhausted"]
        assert report["verdict_reason"].startswith("API key's daily budget exhausted")
        assert (await keys.spent_today(made[0].id)).tokens == report["total_tokens"]

        refused = await client.post("/api/v1/runs", json=body, headers=_auth(tight))
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "BudgetExceededError"


async def test_a_keys_crons_fire_its_runs_held_to_its_budget_and_stop_when_it_is_revoked(
    secured: RunningServer, keys: Keys, make_model: MakeModel
) -> None:
    """A cron made by a key with a daily budget fires runs capped to what the key has left
    and charged to it; once the day is spent, each firing fails saying so. When a key is
    revoked, its cron's firings fail saying that instead of running."""
    spec, _ = make_model(reply="A scheduled answer.")
    _, admin = await keys.create(f"ops-{uuid.uuid4().hex[:6]}", ["runs", "admin"])
    budgeted, tight = await keys.create(
        f"cron-{uuid.uuid4().hex[:6]}", ["runs"], limits=KeyLimits(daily_tokens=5)
    )
    unlimited, plain = await keys.create(f"plain-{uuid.uuid4().hex[:6]}", ["runs"])
    body = {
        "schedule": "* * * * * *",  # every second
        "question": QUESTION,
        "model": spec,
        "approval": "never",
        "mode": "plan",
    }
    async with httpx.AsyncClient(base_url=secured.base_url, timeout=60) as client:

        async def firings(cron_id: str) -> list[dict[str, Any]]:
            found = await client.get(
                "/api/v1/runs", params={"cron_id": cron_id}, headers=_auth(admin)
            )
            runs: list[dict[str, Any]] = found.json()
            return runs

        async def failed_with(cron_id: str, message: str) -> list[dict[str, Any]]:
            return [
                r
                for r in await firings(cron_id)
                if r["status"] == "failed" and message in (r["error"] or "")
            ]

        made = await client.post("/api/v1/crons", json=body, headers=_auth(tight))
        assert made.status_code == 201, made.text
        capped = made.json()["cron_id"]

        async def budget_spent() -> bool:
            return bool(await failed_with(capped, "this API key spent its 5 tokens of today"))

        await wait_for(budget_spent, within_s=60)
        stopped = await client.delete(f"/api/v1/crons/{capped}", headers=_auth(tight))
        assert stopped.status_code == 204

        async def all_ended() -> bool:
            return all(r["status"] not in ("queued", "running") for r in await firings(capped))

        await wait_for(all_ended)
        ran = [r for r in await firings(capped) if r["status"] == "done"]
        assert ran, [(r["status"], r["error"]) for r in await firings(capped)]
        spent = 0
        for run in ran:
            thread = await client.get(f"/api/v1/threads/{run['thread_id']}", headers=_auth(tight))
            assert thread.status_code == 200, thread.text  # the key's tenant's thread
            report = thread.json()["report"]
            assert report["token_budget"] == 5
            assert report["budget_exhausted"]
            spent += report["total_tokens"]
        assert (await keys.spent_today(budgeted.id)).tokens == spent

        made = await client.post("/api/v1/crons", json=body, headers=_auth(plain))
        assert made.status_code == 201, made.text
        revoked = made.json()["cron_id"]

        async def fired_once() -> bool:
            return any(r["status"] == "done" for r in await firings(revoked))

        await wait_for(fired_once, within_s=60)
        assert await keys.revoke(unlimited.id)

        async def refused() -> bool:
            return bool(await failed_with(revoked, "this API key was revoked"))

        await wait_for(refused, within_s=60)
        stopped = await client.delete(f"/api/v1/crons/{revoked}", headers=_auth(admin))
        assert stopped.status_code == 204
        error = (await failed_with(revoked, "this API key was revoked"))[0]["error"]
        assert "the runs it queued and its crons' firings do not start" in error


async def test_an_agent_api_run_whose_client_left_is_charged_what_it_spent(
    secured: RunningServer, keys: Keys, make_model: MakeModel, tmp_path: Path
) -> None:
    """The client of a budgeted key's streamed Agent API run leaves while the run waits in
    its second model call: the run stops, the key is charged what the first step spent, and
    the thread's lock goes back."""
    gate = tmp_path / "never-opened"
    spec, _ = make_model(reply="Charged.", gate_file=str(gate), gate_from_call=2)
    key, secret = await keys.create(
        f"leaver-{uuid.uuid4().hex[:6]}", ["runs"], limits=KeyLimits(daily_tokens=1_000_000)
    )
    async with httpx.AsyncClient(base_url=secured.base_url, timeout=60) as client:
        made = await client.post("/threads", json={}, headers=_auth(secret))
        thread_id = made.json()["thread_id"]
        body = {
            "assistant_id": "agent",
            "input": {"request": QUESTION},
            "context": {"model": spec, "approval": "never", "mode": "plan"},
            "stream_mode": ["custom"],
        }
        async with client.stream(
            "POST", f"/threads/{thread_id}/runs/stream", json=body, headers=_auth(secret)
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if '"event":"step_result"' in line.replace(" ", ""):
                    break  # the client leaves
        await asyncio.sleep(0.5)

        async def idle() -> bool:
            found = await client.get(f"/threads/{thread_id}", headers=_auth(secret))
            return found.json()["status"] == "idle"

        await wait_for(idle)
        thread = await client.get(f"/api/v1/threads/{thread_id}", headers=_auth(secret))
        spent = thread.json()["report"]["total_tokens"]
        assert spent > 0
        assert (await keys.spent_today(key.id)).tokens == spent
