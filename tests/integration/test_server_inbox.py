"""The approvals inbox is read from the checkpoints: a thread that a real `agentgraph` CLI
process stopped at an approval is listed by a running server and can be approved through it,
and a thread that the CLI answered leaves the inbox, whoever had stopped it."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.models import get_chat_model
from tests.fakes import ScriptedChatModel, register_fakes, scripted_spec
from tests.integration.conftest import Cli
from tests.integration.server_harness import RunningServer

QUESTION = "What is A? What is B?"
# A clock read in two processes: allow for rounding in the checkpoint's timestamp.
SLACK = timedelta(seconds=1)


async def _pending(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/v1/approvals", params={"status": "pending"})
    assert response.status_code == 200, response.text
    return {item["thread_id"]: item for item in response.json()}


async def test_a_thread_the_cli_stopped_is_listed_and_approved_over_http(
    api: RunningServer, scripted_cli: Cli
) -> None:
    # The CLI loads the model (to refuse one that cannot be used), but only the server calls
    # it, after the approval: the server runs in this process, whose instance is counted.
    register_fakes()
    spec = scripted_spec(reply="Approved over HTTP.")
    thread_id = f"cli-inbox-{uuid.uuid4().hex}"
    before = datetime.now(UTC)
    document = scripted_cli.json(
        "ask", QUESTION, "--thread", thread_id, "--model", spec, "--mode", "plan",
        "--approval", "always", "--no-input",
    )  # fmt: skip
    after = datetime.now(UTC)
    assert document["status"] == "interrupted", document
    assert document["_exit_code"] == 3

    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        pending = await _pending(client)
        assert thread_id in pending
        item = pending[thread_id]
        assert item["payload"]["gate"] == "plan"
        assert item["payload"]["plan"] == document["plan"]
        waiting_since = datetime.fromisoformat(item["waiting_since"])
        assert before - SLACK <= waiting_since <= after + SLACK
        assert 0 <= item["waiting_s"] <= (datetime.now(UTC) - before + SLACK).total_seconds()
        later = (await _pending(client))[thread_id]
        assert later["waiting_since"] == item["waiting_since"]
        assert later["waiting_s"] >= item["waiting_s"]

        approved = await client.post(f"/api/v1/approvals/{thread_id}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "done", approved.text
        assert "Approved over HTTP." in approved.json()["answer"]
        model = get_chat_model(spec)
        assert isinstance(model, ScriptedChatModel)
        assert model.calls >= 2  # the two steps ran here, after the approval
        assert thread_id not in await _pending(client)
        thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
        assert thread["status"] == "done"
        assert [a["decision"] for a in thread["report"]["approvals"]] == ["approve"]


async def test_threads_the_cli_answers_leave_the_inbox(
    api: RunningServer, scripted_cli: Cli
) -> None:
    # A model that the CLI process can build too: it runs the steps after its approval.
    spec = scripted_spec(reply="Approved at the terminal.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        started = await client.post(
            "/api/v1/agent/run",
            json={"question": QUESTION, "model": spec, "approval": "always", "mode": "plan"},
        )
        by_server = started.json()["thread_id"]
        assert started.json()["status"] == "interrupted", started.text
        by_cli = f"cli-inbox-{uuid.uuid4().hex}"
        asked = scripted_cli.json(
            "ask", QUESTION, "--thread", by_cli, "--model", spec, "--mode", "plan",
            "--approval", "always", "--no-input",
        )  # fmt: skip
        assert asked["status"] == "interrupted", asked
        assert {by_server, by_cli} <= set(await _pending(client))

        approved = scripted_cli.json("resume", by_server, "--approve")
        assert approved["status"] == "done", approved
        assert "Approved at the terminal." in approved["answer"]
        rejected = scripted_cli.json("resume", by_cli, "--reject", "not today")
        assert rejected["status"] == "rejected", rejected

        pending = await _pending(client)
        assert by_server not in pending
        assert by_cli not in pending
        thread = (await client.get(f"/api/v1/threads/{by_server}")).json()
        assert thread["status"] == "done"
        refused = await client.post(f"/api/v1/approvals/{by_cli}/approve")
        assert refused.status_code == 409, refused.text
