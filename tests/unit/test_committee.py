"""The committee pattern on the compiled graph with fake models: each member answers with its
own model and prompt, the judge picks, the votes and the choice are in the step result and the
plan shows the committee."""

from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from app.tools.manifest import parse_manifest
from graphs.agent import compile_graph
from nodes.context import Context
from nodes.toolbox import build_toolbox
from tests.fakes import MakeModel

from .conftest import CollectEvents
from .graph_helpers import QUESTION, final, only, step_results


def _team(models: dict[str, str]) -> str:
    agents = "\n".join(
        f"  - {{name: {name}, description: {name}, model: '{spec}', prompt: Be {name}.}}"
        for name, spec in models.items()
    )
    return f"agents:\n{agents}\n"


async def test_a_committee_answers_and_the_judge_picks(
    thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    first, first_model = make_model(reply="Paris, I think.")
    second, _ = make_model(reply="Paris is the capital of France.")
    third, _ = make_model(reply="Lyon.")
    judge, judge_model = make_model(structured={"best": 2, "reason": "correct and complete"})
    manifest = parse_manifest(
        _team({"quick": first, "careful": second, "wrong": third}), source="t.yaml"
    )
    graph = compile_graph(InMemorySaver(), toolbox=build_toolbox(manifest))
    context = Context(model=judge, approval="never", mode="direct", pattern="committee")

    events = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)

    updates = only(events, "plan_update")
    assert len(updates) == 1, [(u["source"], u["reason"], u["plan"]) for u in updates]
    plan_update = updates[0]
    [step] = plan_update["plan"]["steps"]
    assert (step["pattern"], step["members"]) == ("committee", ["quick", "careful", "wrong"])
    assert "answered by a committee of quick, careful, wrong" in plan_update["reason"]
    result = step_results(events)["answer"]
    assert result["status"] == "done"
    assert result["output"] == "Paris is the capital of France."
    assert [(v["agent"], v["answer"], v["chosen"]) for v in result["votes"]] == [
        ("quick", "Paris, I think.", False),
        ("careful", "Paris is the capital of France.", True),
        ("wrong", "Lyon.", False),
    ]
    assert result["judgement"] == {
        "model": judge,
        "chosen": "careful",
        "reason": "correct and complete",
    }
    assert judge_model.structured_calls == 1
    assert first_model.calls == 1
    end = final(events)
    assert end["answer"] == "Paris is the capital of France."
    assert end["report"]["nodes"]["committee"]["calls"] == 1
    [row] = end["report"]["steps"]
    assert (row["committee"], row["chosen"], row["judged_by"]) == (
        ["quick", "careful", "wrong"],
        "careful",
        judge,
    )


async def test_a_failing_member_leaves_the_others_and_one_answer_needs_no_judge(
    thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    broken, _ = make_model(fail_first=-1)
    working, _ = make_model(reply="Paris.")
    judge, judge_model = make_model(structured={"best": 1, "reason": "x"})
    manifest = parse_manifest(_team({"broken": broken, "working": working}), source="t.yaml")
    graph = compile_graph(InMemorySaver(), toolbox=build_toolbox(manifest))
    context = Context(model=judge, approval="never", mode="direct", pattern="committee")

    events = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)

    result = step_results(events)["answer"]
    assert result["output"] == "Paris."
    assert [(v["agent"], v["status"]) for v in result["votes"]] == [
        ("broken", "failed"),
        ("working", "done"),
    ]
    assert result["judgement"]["chosen"] == "working"
    assert judge_model.structured_calls == 0


async def test_one_agent_is_no_committee(
    thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    spec, _ = make_model(reply="Paris.")
    manifest = parse_manifest(_team({"alone": spec}), source="t.yaml")
    graph = compile_graph(InMemorySaver(), toolbox=build_toolbox(manifest))
    context = Context(model=spec, approval="never", mode="direct", pattern="committee")

    events = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)

    [plan_update] = only(events, "plan_update")
    assert "pattern" not in plan_update["plan"]["steps"][0]
    assert "no committee: the manifest has one agent" in plan_update["reason"]
    assert step_results(events)["answer"]["kind"] == "reasoning"
    assert "votes" not in step_results(events)["answer"]


async def test_a_supervisor_hands_the_step_to_a_worker_and_answers(
    thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    boss, _ = make_model(
        reply="Paris is the capital of France.",
        tool_script=[{"name": "transfer_to_careful", "args": {}}],
    )
    careful, careful_model = make_model(reply="The capital of France is Paris.")
    idle, idle_model = make_model(reply="unused")
    manifest = parse_manifest(
        _team({"boss": boss, "careful": careful, "idle": idle}), source="t.yaml"
    )
    graph = compile_graph(InMemorySaver(), toolbox=build_toolbox(manifest))
    context = Context(model=boss, approval="never", mode="direct", pattern="supervisor")

    events = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)

    [plan_update] = only(events, "plan_update")
    [step] = plan_update["plan"]["steps"]
    assert (step["pattern"], step["members"]) == ("supervisor", ["boss", "careful", "idle"])
    assert "answer supervised by boss with careful, idle" in plan_update["reason"]
    result = step_results(events)["answer"]
    assert result["status"] == "done", result
    assert result["rounds"] == [{"agent": "careful", "answer": "The capital of France is Paris."}]
    assert result["output"] == "Paris is the capital of France."
    assert (careful_model.calls, idle_model.calls) == (1, 0)
    assert result["usage"]["input_tokens"] > 0
    assert final(events)["answer"] == "Paris is the capital of France."


async def test_a_supervisors_worker_falls_back_on_the_next_model_of_its_route(
    thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    boss, _ = make_model(
        reply="Paris is the capital of France.",
        tool_script=[{"name": "transfer_to_careful", "args": {}}],
    )
    broken, _ = make_model(fail_first=-1)
    backup, backup_model = make_model(reply="The capital of France is Paris.")
    events = await _boss_and_careful(collect_events, thread_id, [boss], [broken, backup])

    result = step_results(events)["answer"]
    assert result["status"] == "done", result
    assert result["rounds"] == [{"agent": "careful", "answer": "The capital of France is Paris."}]
    assert backup_model.calls == 1
    [fallback] = only(events, "fallback")
    assert (fallback["node"], fallback["model"], fallback["next"]) == ("supervisor", broken, backup)
    [taken] = final(events)["report"]["model_fallbacks"]
    assert (taken["model"], taken["node"], taken["answered_by"]) == (broken, "supervisor", backup)


async def test_a_supervisor_falls_back_on_the_next_model_of_its_route(
    thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    broken, broken_model = make_model(tool_fail_first=-1)
    backup, backup_model = make_model(
        reply="Paris is the capital of France.",
        tool_script=[{"name": "transfer_to_careful", "args": {}}],
    )
    careful, _ = make_model(reply="The capital of France is Paris.")
    events = await _boss_and_careful(collect_events, thread_id, [broken, backup], [careful])

    result = step_results(events)["answer"]
    assert result["status"] == "done", result
    assert result["rounds"] == [{"agent": "careful", "answer": "The capital of France is Paris."}]
    assert result["output"] == "Paris is the capital of France."
    # The boss's two turns (hand off, then answer) each asked the broken model first.
    assert (broken_model.tool_turns, backup_model.tool_turns) == (2, 2)
    fallbacks = only(events, "fallback")
    assert [(f["node"], f["model"], f["next"]) for f in fallbacks] == [
        ("supervisor", broken, backup)
    ] * 2
    taken = final(events)["report"]["model_fallbacks"]
    assert [(t["model"], t["answered_by"]) for t in taken] == [(broken, backup)] * 2


async def test_a_supervisors_answer_streams_as_its_named_message_once(
    thread_id: str, make_model: MakeModel
) -> None:
    """In LangGraph's messages mode (with subgraphs), the supervisor's answer is the
    supervisor's named message, once: the route it answers through is no message of its own."""
    boss, _ = make_model(reply="Paris is the capital of France.")
    careful, _ = make_model(reply="unused")
    manifest = parse_manifest(_team({"boss": boss, "careful": careful}), source="t.yaml")
    graph = compile_graph(InMemorySaver(), toolbox=build_toolbox(manifest))
    context = Context(model=boss, approval="never", mode="direct", pattern="supervisor")

    answers = []
    async for _, (message, _) in graph.astream(
        {"request": QUESTION},
        {"configurable": {"thread_id": thread_id}},
        context=context,
        stream_mode="messages",
        subgraphs=True,
    ):
        if message.text == "Paris is the capital of France.":
            answers.append(message.name)

    assert answers == ["supervisor"]


async def _boss_and_careful(
    collect_events: CollectEvents, thread_id: str, boss: list[str], careful: list[str]
) -> list[dict[str, Any]]:
    """Run one step supervised by `boss` with the worker `careful`, each given as its model
    and then its fallbacks; return the run's events."""

    def agent(name: str, chain: list[str]) -> str:
        fallbacks = f", fallbacks: {chain[1:]!r}" if chain[1:] else ""
        return f"  - {{name: {name}, description: {name}, model: '{chain[0]}'{fallbacks}}}\n"

    manifest = parse_manifest(
        "agents:\n" + agent("boss", boss) + agent("careful", careful), source="t.yaml"
    )
    graph = compile_graph(InMemorySaver(), toolbox=build_toolbox(manifest))
    context = Context(model=boss[0], approval="never", mode="direct", pattern="supervisor")
    return await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)


async def test_a_supervisor_that_keeps_handing_off_stops_at_the_limit_with_the_last_answer(
    thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    boss, _ = make_model(tool_script=[{"name": "transfer_to_worker", "args": {}}] * 10)
    worker, worker_model = make_model(reply="Paris, again ({n}).")
    manifest = parse_manifest(_team({"boss": boss, "worker": worker}), source="t.yaml")
    graph = compile_graph(InMemorySaver(), toolbox=build_toolbox(manifest))
    context = Context(
        model=boss, approval="never", mode="direct", pattern="supervisor", max_tool_calls=3
    )

    events = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)

    result = step_results(events)["answer"]
    assert [r["agent"] for r in result["rounds"]] == ["worker"] * 3
    assert worker_model.calls == 3
    assert result["status"] == "done"
    assert result["output"] == "Paris, again (3)."


async def test_a_reasoning_step_runs_with_its_agents_model(
    thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    run_model, run_fake = make_model(reply="from the run's model")
    own, own_fake = make_model(reply="from the agent's own model")
    manifest = parse_manifest(_team({"first": run_model, "second": own}), source="t.yaml")
    graph = compile_graph(InMemorySaver(), toolbox=build_toolbox(manifest))
    plan = {
        "goal": "g",
        "steps": [
            {
                "id": "s1",
                "kind": "reasoning",
                "instruction": QUESTION,
                "depends_on": [],
                "requires_approval": False,
                "agent": "second",
            }
        ],
    }
    context = Context(model=run_model, approval="always", mode="direct")
    await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)
    events = await collect_events(
        graph,
        thread_id=thread_id,
        context=context,
        resume={"decision": "edit", "reason": "to second", "plan": plan},
    )

    assert step_results(events)["s1"]["output"] == "from the agent's own model"
    assert (own_fake.calls, run_fake.calls) == (1, 0)
