"""Telemetry of real runs on real Postgres: a run with a retrieval and a tool call is one
trace; `/metrics` over real uvicorn and httpx, scraped after a run, shows it counted, the
database's gauges, and a 429 counted; it needs no key when keys are required."""

import uuid
from pathlib import Path

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from app.auth import KeyLimits, Keys
from app.settings import Settings
from graphs.runs import RunEvent, stream_events
from graphs.service import Agent
from nodes.context import Context
from retrievers.ingest import ingest
from retrievers.service import open_collection
from tests.fakes import MakeModel
from tests.integration.server_harness import RunningServer, running_server, stream_run
from tests.spans import by_id, parent_of

PANDAS = "# Giant pandas\n\nThe giant panda eats bamboo almost exclusively.\n"


async def _events(agent: Agent, thread_id: str, context: Context, request: str) -> list[RunEvent]:
    return [
        e
        async for e in stream_events(
            agent.graph, thread_id=thread_id, context=context, request=request
        )
    ]


async def test_a_run_with_a_retrieval_and_a_tool_call_is_one_trace(
    agent: Agent,
    settings: Settings,
    embedded_url: str,
    tmp_path: Path,
    thread_id: str,
    make_model: MakeModel,
    spans: InMemorySpanExporter,
) -> None:
    (tmp_path / "pandas.md").write_text(PANDAS)
    collection = f"otel_{uuid.uuid4().hex[:10]}"
    async with open_collection(settings, collection, create=True, url=embedded_url) as opened:
        await ingest(*opened, [tmp_path], chunk_size=500, chunk_overlap=50)
    spec, _ = make_model(
        reply="Pandas eat bamboo [1].",
        tool_script=[{"name": "calculator", "args": {"expression": "2 * 3"}}],
    )
    context = Context(model=spec, approval="never", mode="plan", collection=collection)
    spans.clear()

    events = await _events(agent, thread_id, context, "What do giant pandas eat? What is 2 * 3?")

    kinds = {e["result"]["kind"] for e in events if e["event"] == "step_result"}
    assert kinds == {"rag", "tool"}, [e["event"] for e in events]
    finished = spans.get_finished_spans()
    ids = by_id(finished)
    [run] = [s for s in finished if s.name == "run"]
    assert run.parent is None
    assert run.attributes["agentgraph.thread_id"] == thread_id
    assert run.attributes["agentgraph.status"] == "done"
    mine = [s for s in finished if s.context.trace_id == run.context.trace_id]
    assert all(s.attributes.get("agentgraph.thread_id") == thread_id for s in mine)
    nodes = {s.name: s for s in mine if s.name.startswith("node ")}
    assert {"node rag", "node tool", "node synthesize"} <= set(nodes)
    assert all(parent_of(s, ids) is run for s in mine if s.name.startswith("node "))
    [retrieval] = [s for s in mine if s.name == f"retrieve {collection}"]
    assert parent_of(retrieval, ids) is nodes["node rag"]
    assert retrieval.attributes["agentgraph.chunks"] >= 1
    [tool] = [s for s in mine if s.name == "execute_tool calculator"]
    assert parent_of(tool, ids) is nodes["node tool"]
    assert tool.attributes["agentgraph.status"] == "ok"
    assert (
        tool.attributes["agentgraph.step_id"] == nodes["node tool"].attributes["agentgraph.step_id"]
    )
    calls = [s for s in mine if s.name == f"chat {spec}"]
    assert {parent_of(c, ids).name for c in calls} >= {"node rag", "node tool", "node synthesize"}
    assert all(c.attributes["gen_ai.usage.input_tokens"] > 0 for c in calls)


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def _value(
    families: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(v for found, v in families.get(name, []) if labels.items() <= found.items())


async def _scrape(client: httpx.AsyncClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return _families(response.text)


async def test_metrics_after_a_run(api: RunningServer, make_model: MakeModel) -> None:
    spec, _ = make_model(reply="An answer.")
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
        before = await _scrape(client)
        events = await stream_run(
            client,
            "/api/v1/agent/run.stream",
            {
                "question": "What is A? What is B?",
                "model": spec,
                "approval": "never",
                "mode": "plan",
            },
        )
        assert events[-1].event == "final"
        after = await _scrape(client)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("agentgraph_runs_started_total", kind="request") >= 1
    assert moved("agentgraph_runs_finished_total", status="done") >= 1
    assert moved("agentgraph_run_duration_seconds_count", status="done") >= 1
    assert moved("agentgraph_node_duration_seconds_count", node="reasoning") >= 2
    assert moved("agentgraph_node_duration_seconds_count", node="synthesize") >= 1
    assert _value(after, "agentgraph_model_tokens_total", model=spec, direction="input") > 0
    assert _value(after, "agentgraph_model_tokens_total", model=spec, direction="output") > 0
    assert _value(after, "agentgraph_model_cost_usd_total", model=spec) == 0.0  # not priced
    assert "agentgraph_approvals_waiting" in after
    assert "agentgraph_approval_oldest_wait_seconds" in after
    assert {labels["status"] for labels, _ in after["agentgraph_queue_jobs"]} == {"todo", "doing"}
    pools = {
        (labels["pool"], labels["state"]): v
        for labels, v in after["agentgraph_db_pool_connections"]
    }
    assert pools[("main", "max")] > 0
    assert pools[("locks", "open")] >= 0


async def test_metrics_need_no_key_and_count_a_429(
    settings: Settings, embedded_url: str, keys: Keys
) -> None:
    _, secret = await keys.create(
        f"otel-{uuid.uuid4().hex[:6]}", ["runs"], limits=KeyLimits(rate_per_minute=1)
    )
    secured = settings.model_copy(update={"auth": "required"})
    with running_server(secured, embedded_url) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            before = await _scrape(client)  # no key
            auth = {"Authorization": f"Bearer {secret}"}
            statuses = [
                (await client.get("/api/v1/approvals", headers=auth)).status_code for _ in range(2)
            ]
            assert statuses == [200, 429]
            after = await _scrape(client)
            refused = await client.get("/api/v1/approvals")
    assert refused.status_code == 401  # the API itself still needs a key
    rejected = _value(after, "agentgraph_rate_limit_rejections_total", reason="rate")
    assert rejected - _value(before, "agentgraph_rate_limit_rejections_total", reason="rate") == 1
