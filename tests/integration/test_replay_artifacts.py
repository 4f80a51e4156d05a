"""Artefacts and replay on the real graph, Postgres, server and CLI: a tool step's JSON output
is an artefact listed and served with its content, and deleted with its thread; a finished
run, and one approved after its interrupt, replay with the events the live stream had, from
the API and the CLI, calling no model."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from app.tools.manifest import parse_manifest
from graphs.replay import replay
from graphs.retention import delete_thread, prune
from graphs.runs import RunEvent, stream_events
from graphs.service import Agent, open_agent
from nodes.context import Context
from nodes.schemas import ApprovalDecision
from tests import fakes
from tests.fakes import MakeModel, ScriptedChatModel
from tests.integration.conftest import Cli
from tests.integration.server_harness import RunningServer, sse_events

DATA = {"rows": [{"city": "Oslo", "people": 709037}, {"city": "Bergen", "people": 291940}]}
REQUEST = "Read the file cities.json and say which city is larger."
TWO_PARTS = "What is A? What is B?"


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files")
    (path / "cities.json").write_text(json.dumps(DATA, indent=1))
    return path


@pytest.fixture
async def reader(settings: Settings, embedded_url: str, files_dir: Path) -> AsyncIterator[Agent]:
    """An agent whose default agent may read the files under `files_dir`."""
    manifest = parse_manifest(
        f"""
version: 1
agents:
  - name: default
    description: Reads files.
    tools: [read_file]
tools:
  read_file: {{root: {files_dir}}}
""",
        source="reader.yaml",
    )
    async with open_agent(settings, url=embedded_url, manifest=manifest) as opened:
        yield opened


async def _run(agent: Agent, thread_id: str, context: Context, **what: Any) -> list[RunEvent]:
    return [
        e async for e in stream_events(agent.graph, thread_id=thread_id, context=context, **what)
    ]


def _plain(events: list[RunEvent]) -> list[RunEvent]:
    """Events as JSON carries them (the live stream's, too)."""
    plain: list[RunEvent] = json.loads(json.dumps(events, default=str))
    return plain


def _failing_instead(spec: str) -> ScriptedChatModel:
    """Make `spec` a model that fails if it is ever called."""
    failing = ScriptedChatModel(fail_first=-1)
    fakes._MODELS[spec] = failing
    return failing


async def test_a_tool_steps_json_output_is_an_artifact_listed_served_and_deleted(
    reader: Agent, api: RunningServer, cli: Cli, thread_id: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(
        reply="Oslo is larger.",
        tool_script=[{"name": "read_file", "args": {"path": "cities.json"}}],
    )
    events = await _run(reader, thread_id, Context(model=spec, approval="never"), request=REQUEST)

    [result] = [e["result"] for e in events if e["event"] == "step_result"]
    assert result["kind"] == "tool", result
    [ref] = result["artifacts"]
    assert (ref["name"], ref["media_type"]) == ("read_file-1.json", "application/json")
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        listed = (await http.get(f"/api/v1/threads/{thread_id}/artifacts")).json()
        [item] = listed["artifacts"]
        assert (item["artifact_id"], item["step_id"], item["size"]) == (
            ref["id"],
            result["step_id"],
            ref["size"],
        )
        content = await http.get(item["url"])
        assert content.headers["content-type"] == "application/json"
        assert json.loads(content.content) == DATA
        assert (await http.get(f"{item['url'][:-4]}0000")).status_code == 404
        assert (await http.get("/api/v1/threads/no-such-thread/artifacts")).status_code == 404

    shown = cli.json("threads", "artifacts", thread_id)
    assert [a["artifact_id"] for a in shown["artifacts"]] == [ref["id"]]

    assert await delete_thread(reader.db.pool, thread_id) > 0
    assert await reader.artifacts.list(thread_id) == []
    assert [e async for e in _records(reader, thread_id)] == []


async def _records(agent: Agent, thread_id: str) -> AsyncIterator[dict[str, Any]]:
    """The thread's rows of `agentgraph_run_records`."""
    async with agent.db.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT run_id FROM agentgraph_run_records WHERE thread_id = %s", (thread_id,)
        )
        for row in await cursor.fetchall():
            yield row


async def test_a_finished_run_replays_its_live_events_without_a_model(
    agent: Agent, api: RunningServer, cli: Cli, thread_id: str, make_model: MakeModel
) -> None:
    spec, model = make_model(reply="A streamed answer of {n} in several words.")
    context = Context(model=spec, approval="never", mode="plan")
    live = _plain(await _run(agent, thread_id, context, request=TWO_PARTS))
    calls = model.calls
    failing = _failing_instead(spec)

    started = time.monotonic()
    replayed = [e async for e in replay(agent.graph, agent.db.pool, thread_id, speed=0)]
    fast_s = time.monotonic() - started

    assert [e["event"] for e in live].count("delta") > 4
    assert replayed == live
    assert fast_s < 5
    assert (model.calls, failing.calls) == (calls, 0)

    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as http:
        url = f"/api/v1/threads/{thread_id}/replay?speed=0"
        async with http.stream("GET", url) as response:
            assert response.status_code == 200
            sse = [e async for e in sse_events(response)]
        assert (await http.get("/api/v1/threads/no-such-thread/replay")).status_code == 404
        crawl = await http.get(f"/api/v1/threads/{thread_id}/replay?speed=0.00001")
        assert crawl.status_code == 422
        assert crawl.json()["detail"][0]["loc"] == ["query", "speed"]
    assert sse[0].event == "metadata"
    assert [e.data for e in sse[1:]] == live
    assert [e.event for e in sse[1:]] == [e["event"] for e in live]

    doc = cli.json("replay", thread_id, "--speed", "0")
    assert doc["_exit_code"] == 0
    assert doc["events"] == live
    assert failing.calls == 0


async def test_an_approved_run_replays_both_of_its_runs(
    agent: Agent, api: RunningServer, cli: Cli, thread_id: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer {n} from the model.")
    context = Context(model=spec, approval="always", mode="plan")
    first = await _run(agent, thread_id, context, request=TWO_PARTS)
    assert first[-1]["event"] == "interrupt"
    approve = ApprovalDecision(decision="approve", reason=None, plan=None)
    second = await _run(agent, thread_id, context, resume=approve)
    assert second[-1]["event"] == "final"
    live = _plain(first + second)
    failing = _failing_instead(spec)

    replayed = [e async for e in replay(agent.graph, agent.db.pool, thread_id, speed=0)]

    assert replayed == live
    kinds = [e["event"] for e in replayed]
    assert kinds.index("interrupt") < kinds.index("step_result") < kinds.index("final")
    url = f"/api/v1/threads/{thread_id}/replay?speed=0"
    async with (
        httpx.AsyncClient(base_url=api.base_url, timeout=60) as http,
        http.stream("GET", url) as response,
    ):
        sse = [e async for e in sse_events(response)]
    assert [e.data for e in sse[1:]] == live
    shown = cli.run("replay", thread_id, "--speed", "0")
    assert shown.returncode == 0, shown.stderr
    assert "waiting for approval" in shown.stderr
    assert "Answer" in shown.stdout
    assert failing.calls == 0


async def test_a_replay_at_speed_one_keeps_the_runs_pace(
    agent: Agent, thread_id: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="one two three four five", delay_s=0.3)
    started = time.monotonic()
    live = await _run(agent, thread_id, Context(model=spec, approval="never"), request="What is A?")
    took_s = time.monotonic() - started
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    replayed = [
        e async for e in replay(agent.graph, agent.db.pool, thread_id, speed=1, sleep=sleep)
    ]

    assert replayed == _plain(live)
    assert 0.25 < max(slept) <= took_s  # the model's delay is in the record


async def test_pruning_keeps_only_the_latest_runs_record(
    agent: Agent, thread_id: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer {n}.")
    context = Context(model=spec, approval="always", mode="plan")
    await _run(agent, thread_id, context, request=TWO_PARTS)
    approve = ApprovalDecision(decision="approve", reason=None, plan=None)
    second = await _run(agent, thread_id, context, resume=approve)
    later = datetime.now(UTC) + timedelta(hours=1)

    dry = await prune(agent.db.pool, cutoff=later, dry_run=True, thread_ids=[thread_id])
    done = await prune(agent.db.pool, cutoff=later, thread_ids=[thread_id])

    assert (dry.records_deleted, done.records_deleted) == (1, 1)
    replayed = [e async for e in replay(agent.graph, agent.db.pool, thread_id, speed=0)]
    assert replayed == _plain(second)


async def test_runs_of_the_agent_api_replay_too(
    agent: Agent, api: RunningServer, make_model: MakeModel
) -> None:
    """A run streamed through the LangGraph Agent API, in `values` mode only, and its resume
    are recorded: the replay has agentgraph's events of both (as `custom` carried them when
    asked for) and the interrupt between them."""
    from langgraph_sdk import get_client

    spec, _ = make_model(reply="Through the Agent API, {n}.")
    client = get_client(url=api.base_url)
    thread_id = (await client.threads.create())["thread_id"]
    context = {"model": spec, "approval": "always", "mode": "plan"}
    live: list[RunEvent] = []
    async for part in client.runs.stream(
        thread_id, "agent", input={"request": TWO_PARTS}, context=context, stream_mode="custom"
    ):
        if part.event == "custom":
            live.append(part.data)
    async for part in client.runs.stream(
        thread_id, "agent", command={"resume": {"decision": "approve"}}, stream_mode="values"
    ):
        assert part.event != "custom"  # not asked for: still recorded
    failing = _failing_instead(spec)

    replayed = [e async for e in replay(agent.graph, agent.db.pool, thread_id, speed=0)]
    kinds = [e["event"] for e in replayed]
    first = kinds.index("interrupt")
    assert replayed[:first] == _plain(live)
    assert replayed[first]["payload"]["gate"] == "plan"
    assert "delta" in kinds[first:]
    assert kinds[-1] == "final"
    assert replayed[-1]["status"] == "done"
    assert failing.calls == 0


async def test_an_agent_api_run_is_recorded_as_it_goes_and_when_its_client_leaves(
    agent: Agent, api: RunningServer, make_model: MakeModel, tmp_path: Path
) -> None:
    """The first step's result is stored while the run waits in its second model call; the
    client then leaves, the run stops, and its record is stored a last time (its duration
    reaches past the wait). The replay shows the first step as it streamed."""
    from langgraph_sdk import get_client

    gate = tmp_path / "never-opened"
    spec, _ = make_model(
        reply="Said before the client left.", gate_file=str(gate), gate_from_call=2
    )
    client = get_client(url=api.base_url)
    thread_id = (await client.threads.create())["thread_id"]
    context = {"model": spec, "approval": "never", "mode": "plan"}

    async def consume() -> None:
        async for _ in client.runs.stream(
            thread_id, "agent", input={"request": TWO_PARTS}, context=context, stream_mode="values"
        ):
            pass

    streaming = asyncio.create_task(consume())
    try:
        kept = await _stored(agent, thread_id, lambda r: '"event":"step_result"' in r["record"])
        await asyncio.sleep(1.5)  # the run waits at the gate meanwhile
        assert not streaming.done()
    finally:
        streaming.cancel()  # the client leaves
    with pytest.raises(asyncio.CancelledError):
        await streaming
    last = await _stored(agent, thread_id, lambda r: r["duration_ms"] > kept["duration_ms"] + 1000)
    assert '"event":"final"' not in last["record"]

    replayed = [e async for e in replay(agent.graph, agent.db.pool, thread_id, speed=0)]
    [first] = [e["result"] for e in replayed if e["event"] == "step_result"]
    streamed = "".join(
        e["text"] for e in replayed if e["event"] == "delta" and e["step_id"] == first["step_id"]
    )
    assert streamed.strip() == first["output"] == "Said before the client left."


async def _stored(
    agent: Agent, thread_id: str, test: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Wait (up to 30 s) until the thread's one record passes `test`; return it."""
    deadline = time.monotonic() + 30
    while True:
        async with agent.db.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT duration_ms, record::text AS record FROM agentgraph_run_records"
                " WHERE thread_id = %s",
                (thread_id,),
            )
            rows = await cursor.fetchall()
        if rows:
            [row] = rows
            if test(row):
                return dict(row)
        assert time.monotonic() < deadline, f"no such record of {thread_id}: {rows}"
        await asyncio.sleep(0.1)
