"""Whole runs of the compiled graph on fake chat models and an in-memory checkpointer: the
event order and report, the direct route, repeat requests on a thread and the synthesis."""

from typing import Any

from graphs.agent import AgentGraph
from graphs.runs import thread_config
from graphs.threads import stored_context, view_thread
from nodes.context import Context
from tests.fakes import MakeModel

from .conftest import CollectEvents
from .graph_helpers import QUESTION, TWO_PARTS, final, names, only, state_of, step_results


async def test_full_run_reports_and_orders_events(
    graph: AgentGraph, thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    spec, model = make_model(reply="Paris is the capital of France.")
    context = Context(model=spec, approval="never", mode="plan")

    events = await collect_events(graph, thread_id=thread_id, context=context, request=TWO_PARTS)

    end = final(events)
    assert end["status"] == "done"
    assert end["answer"] == "Paris is the capital of France."
    report = end["report"]
    assert report["status"] == "done"
    # two reasoning steps and one synthesis, 11 input and 6 output tokens each
    assert model.calls == 3
    assert report["total_tokens"] == 3 * (11 + 6)
    assert (report["input_tokens"], report["output_tokens"]) == (33, 18)
    nodes = report["nodes"]
    for node in ("orchestrator", "planner", "reasoning", "critic", "synthesize", "finalize"):
        assert node in nodes
    assert nodes["reasoning"]["calls"] == 2
    assert nodes["reasoning"]["total_tokens"] == 34
    assert nodes["synthesize"]["total_tokens"] == 17
    assert report["verdict"] == "accept"
    assert [s["step_id"] for s in report["steps"]] == ["s1", "s2"]

    order = names(events)
    first_dispatch = next(
        i for i, e in enumerate(events) if e["event"] == "handoff" and e["source"] == "dispatch"
    )
    assert order.index("plan_update") < first_dispatch < order.index("step_result")
    assert max(i for i, n in enumerate(order) if n == "step_result") < order.index("final")
    deltas = [e["text"] for e in only(events, "delta") if e["step_id"] == "s1"]
    assert "".join(deltas) == "Paris is the capital of France."

    view = await view_thread(graph, thread_id)
    assert view["status"] == "done"
    assert view["answer"] == end["answer"]
    assert view["report"] == report
    assert await stored_context(graph, thread_id) == context


async def test_direct_route_answers_with_one_step(
    graph: AgentGraph, thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    spec, model = make_model(reply="Paris.")
    context = Context(model=spec, approval="never")

    events = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)

    end = final(events)
    assert end["answer"] == "Paris."
    assert model.calls == 1  # no synthesis call for a single step
    assert list(step_results(events)) == ["answer"]
    assert only(events, "plan_update")[0]["source"] == "direct"
    assert "planner" not in end["report"]["nodes"]


async def test_second_request_on_a_thread_runs_its_own_steps(
    graph: AgentGraph, thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    spec, model = make_model(reply="answer {n}")
    context = Context(model=spec, approval="never", mode="plan")
    await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)
    assert model.calls == 2  # s1, then s2 (whose answer is the final one)

    events = await collect_events(
        graph, thread_id=thread_id, context=context, request="What is the capital of Spain?"
    )

    assert final(events)["status"] == "done"
    assert set(step_results(events)) == {"s1", "s2"}  # today: no step runs at all


async def test_a_new_thread_writes_no_earlier_run_to_clear(
    graph: AgentGraph, thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    """The orchestrator clears what an earlier run left, and on a new thread, where all of it
    is empty, writes nothing for it; the second run on a thread starts clear and reports only
    its own usage."""
    spec, _ = make_model(reply="answer {n}")
    context = Context(model=spec, approval="never", mode="plan")
    earlier = {"answer", "citations", "report", "results", "approvals", "plan_history"}

    async def after_orchestrator() -> dict[str, Any]:
        async for snap in graph.aget_state_history(thread_config(thread_id)):
            if snap.next == ("planner",):
                return dict(snap.values)
        raise AssertionError("no checkpoint before the planner")

    first = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)
    fresh = await after_orchestrator()
    assert not any(fresh.get(key) for key in earlier)
    assert not {"answer", "citations", "report"} & set(fresh)
    assert (await state_of(graph, thread_id))["usage"][0]["node"] == "orchestrator"

    second = await collect_events(
        graph, thread_id=thread_id, context=context, request="What is the capital of Spain?"
    )
    cleared = await after_orchestrator()
    assert (cleared["answer"], cleared["citations"], cleared["report"]) == ("", [], None)
    assert (cleared["results"], cleared["approvals"], cleared["plan_history"]) == ({}, [], [])
    assert [r["node"] for r in cleared["usage"]] == ["orchestrator"]
    calls = [
        {node: totals["calls"] for node, totals in final(run)["report"]["nodes"].items()}
        for run in (first, second)
    ]
    assert calls[0] == calls[1]
    assert calls[0]["orchestrator"] == 1


async def test_compose_synthesis_keeps_every_part(
    graph: AgentGraph, thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    spec, model = make_model(reply="answer {n}")
    context = Context(model=spec, approval="never", synthesis="compose")

    events = await collect_events(graph, thread_id=thread_id, context=context, request=TWO_PARTS)

    answer = final(events)["answer"]
    assert model.calls == 2  # the two steps; composing asks the model nothing
    assert "What is the capital of France?" in answer
    assert "What is the capital of Spain?" in answer
    assert sorted(line for line in answer.splitlines() if line.startswith("answer")) == [
        "answer 1",
        "answer 2",
    ]


def test_auto_synthesis_composes_only_for_the_local_model() -> None:
    from nodes.synthesize import synthesis_mode

    assert synthesis_mode(Context(model="local")) == "compose"
    assert synthesis_mode(Context(model="openai:gpt-4o-mini")) == "model"
    assert synthesis_mode(Context(model="local", synthesis="model")) == "model"
