"""Telemetry on the in-memory graph: one run is one trace (run, nodes, model calls) whose
counts are the run report's; the metrics move; log lines of a run name its thread and run;
OTLP is set up only when a collector is named."""

import io
import itertools
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from app.models import register_chat_model
from app.settings import Settings
from app.telemetry.logs import JsonFormatter, RunFields, bind_run, logging_config
from app.telemetry.metrics import DatabaseFigures, PoolFigures, metrics, render
from app.telemetry.tracing import install_tracing, span_exporter, tracer_provider
from graphs.agent import AgentGraph
from graphs.observe import observed
from graphs.runs import RunEvent, run_events, thread_config
from nodes.context import Context
from tests.fakes import MakeModel
from tests.spans import by_id, parent_of

from .conftest import CollectEvents


def _sample(name: str, **labels: str) -> float:
    return metrics().registry.get_sample_value(name, labels) or 0.0


async def test_a_run_is_one_trace_of_its_nodes_and_their_model_calls(
    graph: AgentGraph,
    thread_id: str,
    make_model: MakeModel,
    collect_events: CollectEvents,
    spans: InMemorySpanExporter,
) -> None:
    spec, _ = make_model(reply="An answer.", delay_s=0.05)
    context = Context(model=spec, approval="never", mode="plan")
    started = _sample("agentgraph_runs_started_total", kind="request")
    done = _sample("agentgraph_runs_finished_total", status="done")
    workers = _sample("agentgraph_node_duration_seconds_count", node="reasoning")
    tokens = _sample("agentgraph_model_tokens_total", model=spec, direction="output")

    events = await collect_events(
        graph, thread_id=thread_id, context=context, request="What is A? What is B?"
    )

    assert events[-1]["event"] == "final"
    finished = spans.get_finished_spans()
    ids = by_id(finished)
    [run] = [s for s in finished if s.name == "run"]
    assert run.parent is None
    assert run.attributes is not None
    assert run.attributes["agentgraph.thread_id"] == thread_id
    assert run.attributes["agentgraph.run_id"]
    assert run.attributes["agentgraph.status"] == "done"
    assert {s.context.trace_id for s in finished} == {run.context.trace_id}
    nodes = [s for s in finished if s.name.startswith("node ")]
    assert {s.name for s in nodes} >= {
        "node orchestrator",
        "node dispatch",
        "node reasoning",
        "node critic",
        "node synthesize",
        "node finalize",
    }
    assert all(parent_of(s, ids) is run for s in nodes)  # the parallel workers too
    workers_spans = [s for s in nodes if s.name == "node reasoning"]
    assert sorted(str(s.attributes["agentgraph.step_id"]) for s in workers_spans) == ["s1", "s2"]
    calls = [s for s in finished if s.name == f"chat {spec}"]
    assert len(calls) == 3  # two steps and the synthesis
    for call in calls:
        node = parent_of(call, ids)
        assert node is not None
        assert node.name in ("node reasoning", "node synthesize")
        assert call.attributes["agentgraph.thread_id"] == thread_id
        assert call.attributes["gen_ai.usage.output_tokens"] > 0
        assert call.attributes.get("agentgraph.step_id") == node.attributes.get(
            "agentgraph.step_id"
        )
    # The counts are the run report's own.
    report = (await graph.aget_state(thread_config(thread_id))).values["report"]
    assert run.attributes["gen_ai.usage.input_tokens"] == report["input_tokens"]
    assert run.attributes["gen_ai.usage.output_tokens"] == report["output_tokens"]
    assert run.attributes["agentgraph.cost_usd"] == pytest.approx(report["total_cost"])

    assert _sample("agentgraph_runs_started_total", kind="request") == started + 1
    assert _sample("agentgraph_runs_finished_total", status="done") == done + 1
    assert _sample("agentgraph_node_duration_seconds_count", node="reasoning") == workers + 2
    assert (
        _sample("agentgraph_model_tokens_total", model=spec, direction="output")
        == tokens + report["output_tokens"]
    )


async def test_an_interrupted_run_counts_as_interrupted_and_its_gate_is_no_error(
    graph: AgentGraph,
    thread_id: str,
    make_model: MakeModel,
    collect_events: CollectEvents,
    spans: InMemorySpanExporter,
) -> None:
    spec, _ = make_model(reply="An answer.")
    context = Context(model=spec, approval="always", mode="plan")
    before = _sample("agentgraph_runs_finished_total", status="interrupted")

    events = await collect_events(graph, thread_id=thread_id, context=context, request="Why?")

    assert events[-1]["event"] == "interrupt"
    [run] = [s for s in spans.get_finished_spans() if s.name == "run"]
    assert run.attributes["agentgraph.status"] == "interrupted"
    [gate] = [s for s in spans.get_finished_spans() if s.name == "node approve_plan"]
    assert gate.attributes["agentgraph.interrupted"] is True
    assert gate.status.status_code != trace.StatusCode.ERROR
    assert _sample("agentgraph_runs_finished_total", status="interrupted") == before + 1


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """JSON lines of `nodes.llm`'s log, as `AGENTGRAPH_LOG_FORMAT=json` writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RunFields())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("nodes.llm")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


async def test_a_line_logged_inside_a_run_names_its_thread_and_run(
    graph: AgentGraph, thread_id: str, log_lines: io.StringIO
) -> None:
    # A model that reports no usage: generate() logs a warning from inside the run's nodes.
    register_chat_model(
        "no-usage",
        lambda spec, settings: GenericFakeChatModel(
            messages=itertools.repeat(AIMessage("An answer without usage."))
        ),
    )
    events: list[RunEvent] = []
    await run_events(
        graph,
        sink=events.append,
        thread_id=thread_id,
        context=Context(model="no-usage:x", approval="never", mode="direct"),
        request="Why?",
        run_id="run-123",
    )
    logging.getLogger("nodes.llm").warning("outside any run")

    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    inside = [line for line in lines if "estimating" in line["message"]]
    assert inside
    for line in inside:
        assert line["thread_id"] == thread_id
        assert line["run_id"] == "run-123"
        assert line["level"] == "WARNING"
        assert line["logger"] == "nodes.llm"
    assert "thread_id" not in lines[-1]
    assert lines[-1]["message"] == "outside any run"


def test_the_json_format_is_one_object_a_line_with_the_exception() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord(
            "graphs.runs", logging.ERROR, __file__, 1, "run %s failed", ("t1",), sys.exc_info()
        )
    with bind_run("t1", "r1"):
        RunFields().filter(record)
    text = JsonFormatter().format(record)

    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "run t1 failed"
    assert (line["level"], line["logger"]) == ("ERROR", "graphs.runs")
    assert (line["thread_id"], line["run_id"]) == ("t1", "r1")
    assert "ValueError: bad\nvalue" in line["exc_info"]
    assert line["time"].endswith("+00:00")


def test_json_logging_takes_uvicorn_s_loggers_too() -> None:
    config = logging_config("json", level="INFO")
    assert config["formatters"]["agentgraph"] == {"()": JsonFormatter}
    assert config["loggers"]["uvicorn.access"] == {"handlers": [], "propagate": True}
    assert config["root"] == {"level": "INFO", "handlers": ["stderr"]}
    assert "()" not in logging_config("text")["formatters"]["agentgraph"]


def test_traces_are_exported_only_to_a_named_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    quiet = Settings(_env_file=None)  # type: ignore[call-arg]
    assert span_exporter(quiet) is None
    assert tracer_provider(quiet) is None
    provider_before = trace.get_tracer_provider()
    assert install_tracing(quiet) is False
    assert trace.get_tracer_provider() is provider_before

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "agentgraph-test")
    named = Settings(_env_file=None)  # type: ignore[call-arg]
    exporter = span_exporter(named)
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://127.0.0.1:4318/v1/traces"
    provider = tracer_provider(named)
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "agentgraph-test"
    provider.shutdown()  # nothing was recorded: nothing is sent

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/traces")
    direct = span_exporter(Settings(_env_file=None))  # type: ignore[call-arg]
    assert isinstance(direct, OTLPSpanExporter)
    assert direct._endpoint == "http://collector:4318/traces"


def test_the_database_figures_are_gauges_of_the_scrape() -> None:
    text = render(
        DatabaseFigures(
            approvals_waiting=2,
            oldest_approval_wait_s=30.0,
            queue_jobs={"todo": 3, "doing": 1},
            pools={"main": PoolFigures(size=4, idle=1, max=10, waiting=0)},
        )
    ).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    assert families["agentgraph_approvals_waiting"].samples[0].value == 2
    assert families["agentgraph_approval_oldest_wait_seconds"].samples[0].value == 30
    jobs = {s.labels["status"]: s.value for s in families["agentgraph_queue_jobs"].samples}
    assert jobs == {"todo": 3, "doing": 1}
    pool = {s.labels["state"]: s.value for s in families["agentgraph_db_pool_connections"].samples}
    assert pool == {"open": 4, "idle": 1, "in_use": 3, "max": 10}
    assert "agentgraph_runs_started" in families
    unread = {f.name: f for f in text_string_to_metric_families(render().decode())}
    assert unread["agentgraph_approvals_waiting"].samples == []


def test_only_async_nodes_are_observed() -> None:
    def plain(state: dict[str, str]) -> dict[str, str]:
        return state

    with pytest.raises(TypeError, match="not async"):
        observed("plain", plain)  # type: ignore[type-var]
