"""Pruning and deleting threads against real Postgres and a real server: what pruning keeps
still loads with the same values, a pending approval still resumes, a fork's branches stay,
a busy thread is left alone, and a deleted thread is gone from every table."""

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import psycopg
from psycopg.conninfo import make_conninfo

from app.settings import Settings
from graphs.locks import holding_thread
from graphs.retention import prune
from graphs.runs import thread_config
from graphs.service import Agent, open_agent
from tests.fakes import MakeModel
from tests.integration.conftest import Cli
from tests.integration.server_harness import RunningServer, running_server, wait_for

QUESTION = "What is A? What is B?"
TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


async def _rows(agent: Agent, thread_id: str) -> dict[str, int]:
    counts = {}
    async with agent.db.pool.connection() as conn:
        for table in TABLES:
            cursor = await conn.execute(
                f"SELECT count(*) AS n FROM {table} WHERE thread_id = %s", (thread_id,)
            )
            row = await cursor.fetchone()
            assert row is not None
            counts[table] = row["n"]
    return counts


async def _tree(agent: Agent, thread_id: str) -> dict[str, str | None]:
    async with agent.db.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT checkpoint_id, parent_checkpoint_id FROM checkpoints"
            " WHERE thread_id = %s AND checkpoint_ns = ''",
            (thread_id,),
        )
        return {r["checkpoint_id"]: r["parent_checkpoint_id"] for r in await cursor.fetchall()}


async def _values(agent: Agent, thread_id: str, checkpoint_id: str) -> dict[str, Any]:
    snapshot = await agent.graph.aget_state(thread_config(thread_id, checkpoint_id))
    assert snapshot.created_at is not None, checkpoint_id
    return dict(snapshot.values)


async def _run(client: httpx.AsyncClient, spec: str, approval: str) -> str:
    result = await client.post(
        "/api/v1/agent/run",
        json={"question": QUESTION, "model": spec, "approval": approval, "mode": "plan"},
    )
    assert result.status_code == 200, result.text
    thread_id: str = result.json()["thread_id"]
    return thread_id


async def test_prune_keeps_what_threads_need_and_it_still_works(
    api: RunningServer, agent: Agent, make_model: MakeModel, cli: Cli
) -> None:
    spec, _ = make_model(reply="Kept answer.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        done = await _run(client, spec, "never")
        waiting = await _run(client, spec, "always")
        forked = await _run(client, spec, "never")
        checkpoints = (await client.get(f"/api/v1/threads/{forked}/history")).json()["checkpoints"]
        before_synthesis = next(c for c in checkpoints if c["next"] == ["synthesize"])
        fork = await client.post(
            f"/api/v1/threads/{forked}/fork",
            json={
                "checkpoint_id": before_synthesis["checkpoint_id"],
                "values": {"answer": "A forked answer."},
                "as_node": "synthesize",
            },
        )
        assert fork.status_code == 200, fork.text
        threads = (done, waiting, forked)
        old_head = checkpoints[0]["checkpoint_id"]
        before = {t: await _rows(agent, t) for t in threads}
        trees = {t: await _tree(agent, t) for t in threads}
        values = {t: {c: await _values(agent, t, c) for c in trees[t]} for t in threads}

        # A dry run says what would go and changes nothing.
        dry = cli.json("threads", "prune", "--older-than", "0s", "--dry-run")
        assert dry["dry_run"] is True
        assert dry["checkpoints_deleted"] > 0
        assert {t: await _rows(agent, t) for t in threads} == before

        report = cli.json("threads", "prune", "--older-than", "0s")
        assert report["checkpoints_deleted"] >= dry["checkpoints_deleted"]
        assert report["blobs_deleted"] > 0

        after = {t: await _tree(agent, t) for t in threads}
        # A finished and a waiting thread keep their latest checkpoint alone; the forked one
        # its new head, its old branch's head and the fork point they hang from.
        assert len(after[done]) == 1
        assert len(after[waiting]) == 1
        assert set(after[forked]) == {
            fork.json()["checkpoint_id"],
            old_head,
            before_synthesis["checkpoint_id"],
        }
        assert after[forked][fork.json()["checkpoint_id"]] == before_synthesis["checkpoint_id"]
        assert after[forked][old_head] == before_synthesis["checkpoint_id"]
        for t in threads:
            for checkpoint_id in after[t]:
                # Every kept checkpoint loads whole: no channel value it names was deleted.
                assert await _values(agent, t, checkpoint_id) == values[t][checkpoint_id]
            shrunk = await _rows(agent, t)
            assert shrunk["checkpoints"] < before[t]["checkpoints"]
            assert shrunk["checkpoint_blobs"] < before[t]["checkpoint_blobs"]

        # The thread waiting for a person still does; approving it finishes the run.
        view = (await client.get(f"/api/v1/threads/{waiting}")).json()
        assert view["status"] == "interrupted"
        approved = await client.post(f"/api/v1/approvals/{waiting}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "done"
        assert "Kept answer." in approved.json()["answer"]
        # The fork's head runs on to its end with the forked answer.
        continued = await client.post(f"/api/v1/threads/{forked}/continue")
        assert continued.status_code == 200, continued.text
        assert continued.json()["answer"].startswith("A forked answer.")


async def test_prune_leaves_a_thread_being_run(
    api: RunningServer, agent: Agent, make_model: MakeModel, embedded_url: str
) -> None:
    spec, _ = make_model(reply="Busy answer.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        thread_id = await _run(client, spec, "never")
    before = await _rows(agent, thread_id)
    from datetime import UTC, datetime

    async with holding_thread(embedded_url, thread_id):
        report = await prune(agent.db.pool, cutoff=datetime.now(UTC), thread_ids=[thread_id])
    assert report.threads_busy == [thread_id]
    assert report.checkpoints_deleted == 0
    assert await _rows(agent, thread_id) == before


async def test_delete_a_thread_wholly_but_never_one_being_run(
    api: RunningServer, agent: Agent, make_model: MakeModel, embedded_url: str, cli: Cli
) -> None:
    spec, _ = make_model(reply="Doomed answer.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        thread_id = await _run(client, spec, "always")
        before = await _rows(agent, thread_id)
        async with holding_thread(embedded_url, thread_id):
            busy = await client.delete(f"/api/v1/threads/{thread_id}")
        assert busy.status_code == 409, busy.text
        assert await _rows(agent, thread_id) == before

        deleted = await client.delete(f"/api/v1/threads/{thread_id}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {
            "thread_id": thread_id,
            "checkpoints_deleted": before["checkpoints"],
        }
        assert await _rows(agent, thread_id) == dict.fromkeys(TABLES, 0)
        assert (await client.get(f"/api/v1/threads/{thread_id}")).status_code == 404
        pending = (await client.get("/api/v1/approvals")).json()
        assert thread_id not in {p["thread_id"] for p in pending}
        again = await client.delete(f"/api/v1/threads/{thread_id}")
        assert again.status_code == 404

        # The CLI asks first; without a terminal to ask at, it deletes nothing.
        other = await _run(client, spec, "never")
    refused = cli.run("threads", "delete", other)
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    assert (await _rows(agent, other))["checkpoints"] > 0
    gone = cli.json("threads", "delete", other, "--yes")
    assert gone["checkpoints_deleted"] > 0
    assert await _rows(agent, other) == dict.fromkeys(TABLES, 0)


async def test_a_server_with_a_checkpoint_ttl_prunes_on_its_own(
    settings: Settings, embedded_url: str, make_model: MakeModel
) -> None:
    """AGENTGRAPH_CHECKPOINT_TTL: the server prunes when it starts (and hourly), here on a
    database of its own so that no other test's threads are pruned."""
    name = f"ttl_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(embedded_url, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(embedded_url, dbname=name)
    spec, _ = make_model(reply="Short-lived answer.")
    with running_server(settings, url) as plain:
        async with httpx.AsyncClient(base_url=plain.base_url, timeout=60) as client:
            thread_id = await _run(client, spec, "never")
    async with open_agent(settings, url=url) as own:
        assert (await _rows(own, thread_id))["checkpoints"] > 1
        await asyncio.sleep(1.1)
        with running_server(
            settings.model_copy(update={"checkpoint_ttl": timedelta(seconds=1)}), url
        ):

            async def pruned() -> bool:
                return (await _rows(own, thread_id))["checkpoints"] == 1

            await wait_for(pruned, within_s=60)
