"""Whole runs of the compiled graph on fake chat models and an in-memory checkpointer."""

from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs.agent import AgentGraph, compile_graph
from graphs.runs import RunEvent, thread_config
from graphs.threads import stored_context, view_thread
from nodes.context import Context
from nodes.plans import rule_plan
from tests.fakes import MakeModel

from .conftest import CollectEvents

QUESTION = "What is the capital of France?"
TWO_PARTS = "What is the capital of France? What is the capital of Spain?"


def step(step_id: str, instruction: str, depends_on: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": step_id,
        "kind": "reasoning",
        "instruction": instruction,
        "depends_on": depends_on or [],
        "requires_approval": False,
    }


def names(events: list[RunEvent]) -> list[str]:
    return [e["event"] for e in events]


def only(events: list[RunEvent], name: str) -> list[RunEvent]:
    return [e for e in events if e["event"] == name]


def final(events: list[RunEvent]) -> RunEvent:
    finals = only(events, "final")
    assert len(finals) == 1, names(events)
    assert events[-1] is finals[0]
    return finals[0]


def step_results(events: list[RunEvent]) -> dict[str, dict[str, Any]]:
    return {e["result"]["step_id"]: e["result"] for e in only(events, "step_result")}


async def state_of(graph: AgentGraph, thread_id: str) -> dict[str, Any]:
    return (await graph.aget_state(thread_config(thread_id))).values


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


class TestApproval:
    async def start(
        self,
        graph: AgentGraph,
        thread_id: str,
        context: Context,
        collect_events: CollectEvents,
    ) -> RunEvent:
        events = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)
        assert names(events)[-1] == "interrupt"
        assert not only(events, "step_result")
        return events[-1]

    async def test_always_interrupts_with_the_plan(
        self,
        graph: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        spec, model = make_model()
        context = Context(model=spec, approval="always", mode="plan")

        interrupt = await self.start(graph, thread_id, context, collect_events)

        payload = interrupt["payload"]
        assert payload["gate"] == "plan"
        assert payload["thread_id"] == thread_id
        assert [s["id"] for s in payload["plan"]["steps"]] == ["s1", "s2"]
        assert model.calls == 0
        view = await view_thread(graph, thread_id)
        assert view["status"] == "interrupted"
        assert view["pending_approval"] == payload
        assert view["answer"] is None

    async def test_reject_ends_the_run_with_the_reason(
        self,
        graph: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        spec, model = make_model()
        context = Context(model=spec, approval="always", mode="plan")
        await self.start(graph, thread_id, context, collect_events)

        events = await collect_events(
            graph,
            thread_id=thread_id,
            context=context,
            resume={"decision": "reject", "reason": "not worth the tokens", "plan": None},
        )

        end = final(events)
        assert end["status"] == "rejected"
        assert "not worth the tokens" in end["answer"]
        assert not only(events, "step_result")
        assert model.calls == 0
        assert [a["decision"] for a in end["report"]["approvals"]] == ["reject"]
        assert (await view_thread(graph, thread_id))["status"] == "rejected"

    async def test_edit_runs_exactly_the_edited_plan(
        self,
        graph: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        spec, _ = make_model()
        context = Context(model=spec, approval="always", mode="plan")
        await self.start(graph, thread_id, context, collect_events)
        edited = {
            "goal": QUESTION,
            "steps": [
                step("x1", "Name France's capital."),
                step("x2", "Say one fact about it.", ["x1"]),
            ],
        }

        events = await collect_events(
            graph,
            thread_id=thread_id,
            context=context,
            resume={"decision": "edit", "reason": "shorter", "plan": edited},
        )

        assert final(events)["status"] == "done"
        assert list(step_results(events)) == ["x1", "x2"]
        dispatched = [e["step_id"] for e in only(events, "handoff") if e["source"] == "dispatch"]
        assert dispatched == ["x1", "x2"]
        state = await state_of(graph, thread_id)
        assert set(state["results"]) == {"x1", "x2"}
        assert state["plan"] == edited
        assert [r["source"] for r in state["plan_history"]] == ["rules", "edit"]
        assert "shorter" in state["plan_history"][-1]["reason"]

    async def test_invalid_decision_asks_again(
        self,
        graph: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        spec, _ = make_model()
        context = Context(model=spec, approval="always", mode="plan")
        await self.start(graph, thread_id, context, collect_events)

        again = await collect_events(
            graph, thread_id=thread_id, context=context, resume={"decision": "edit"}
        )
        assert names(again)[-1] == "interrupt"
        assert "needs a 'plan'" in again[-1]["payload"]["error"]

        events = await collect_events(
            graph, thread_id=thread_id, context=context, resume={"decision": "approve"}
        )
        end = final(events)
        assert end["status"] == "done"
        assert [a["decision"] for a in end["report"]["approvals"]] == ["approve"]

    async def test_when_required_stops_only_for_risky_plans(
        self,
        graph: AgentGraph,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        spec, _ = make_model()
        context = Context(model=spec, approval="when_required")
        risky = await collect_events(
            graph,
            thread_id="unit-risky-" + spec,
            context=context,
            request="- delete the old logs\n- summarise the new ones",
        )
        assert names(risky)[-1] == "interrupt"
        assert "s1" in risky[-1]["payload"]["risk"]
        safe = await collect_events(
            graph,
            thread_id="unit-safe-" + spec,
            context=context,
            request="- list the old logs\n- summarise the new ones",
        )
        assert final(safe)["status"] == "done"

    async def test_final_gate_rejects_the_answer(
        self,
        graph: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        spec, _ = make_model(reply="Paris.")
        context = Context(model=spec, approval="never", approve_final=True)
        events = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)
        assert names(events)[-1] == "interrupt"
        payload = events[-1]["payload"]
        assert payload["gate"] == "final"
        assert payload["answer"] == "Paris."
        assert "edit" not in payload["resume"]

        again = await collect_events(
            graph,
            thread_id=thread_id,
            context=context,
            resume={"decision": "edit", "plan": payload["plan"]},
        )
        assert names(again)[-1] == "interrupt"
        assert "not edited" in again[-1]["payload"]["error"]

        events = await collect_events(
            graph,
            thread_id=thread_id,
            context=context,
            resume={"decision": "reject", "reason": "wrong city"},
        )
        end = final(events)
        assert end["status"] == "rejected"
        assert end["answer"] == "The answer was rejected: wrong city"
        assert [a["gate"] for a in end["report"]["approvals"]] == ["final"]

    async def test_final_gate_approves_the_answer(
        self,
        graph: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        spec, _ = make_model(reply="Paris.")
        context = Context(model=spec, approval="never", approve_final=True)
        await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)
        events = await collect_events(
            graph, thread_id=thread_id, context=context, resume={"decision": "approve"}
        )
        end = final(events)
        assert (end["status"], end["answer"]) == ("done", "Paris.")


async def test_token_budget_makes_the_critic_give_up(
    graph: AgentGraph, thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    spec, model = make_model(reply="Some facts about France.")
    context = Context(model=spec, approval="never", mode="plan", token_budget=10)

    events = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)

    end = final(events)
    assert end["report"]["budget_exhausted"] is True
    assert end["report"]["verdict"] == "give_up"
    assert "budget" in end["answer"]
    assert "Some facts about France." in end["answer"]  # the partial result is kept
    results = step_results(events)
    assert results["s1"]["status"] == "done"
    assert results["s2"]["status"] == "skipped"
    assert "budget" in results["s2"]["error"]
    assert model.calls == 1  # neither s2 nor the synthesis called the model


class TestFailingSteps:
    @pytest.fixture
    def graph_two_attempts(self) -> AgentGraph:
        return compile_graph(InMemorySaver(), step_attempts=2)

    @pytest.fixture
    def graph_one_attempt(self) -> AgentGraph:
        return compile_graph(InMemorySaver(), step_attempts=1)

    async def test_always_failing_step_replans_then_gives_up(
        self,
        graph_two_attempts: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        spec, model = make_model(fail_first=-1)
        context = Context(model=spec, approval="never", mode="direct", max_replans=2)

        events = await collect_events(
            graph_two_attempts, thread_id=thread_id, context=context, request=QUESTION
        )

        results = step_results(events)
        assert list(results) == ["answer", "answer-r2", "answer-r3"]
        for result in results.values():
            assert result["status"] == "failed"
            assert result["attempts"] == 2
            assert "failed after 2 attempt(s)" in result["error"]
            assert "RuntimeError: scripted failure" in result["error"]
        assert model.calls == 6
        end = final(events)
        assert end["status"] == "failed"
        assert "still failing after 2 replan(s)" in end["answer"]
        report = end["report"]
        assert report["replans"] == 2
        assert report["verdict"] == "give_up"
        assert report["nodes"]["reasoning"]["retries"] == 3
        state = await state_of(graph_two_attempts, thread_id)
        assert [r["source"] for r in state["plan_history"]] == ["direct", "replan", "replan"]
        assert "(Retry:" in state["plan"]["steps"][0]["instruction"]

    async def test_replan_succeeds_after_a_failed_first_call(
        self,
        graph_one_attempt: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        spec, _ = make_model(fail_first=1, reply="Paris.")
        context = Context(model=spec, approval="never", mode="direct")

        events = await collect_events(
            graph_one_attempt, thread_id=thread_id, context=context, request=QUESTION
        )

        results = step_results(events)
        assert results["answer"]["status"] == "failed"
        assert results["answer"]["attempts"] == 1
        assert "scripted failure on call 1" in results["answer"]["error"]
        assert results["answer-r2"]["status"] == "done"
        end = final(events)
        assert end["status"] == "done"
        assert end["answer"] == "Paris."
        assert end["report"]["replans"] == 1
        assert end["report"]["verdict"] == "accept"

    async def test_step_timeout_fails_the_step(
        self, make_model: MakeModel, thread_id: str, collect_events: CollectEvents
    ) -> None:
        graph = compile_graph(InMemorySaver(), step_timeout_s=0.1, step_attempts=1)
        spec, _ = make_model(delay_s=5.0)
        context = Context(model=spec, approval="never", mode="direct", max_replans=0)

        events = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)

        result = step_results(events)["answer"]
        assert result["status"] == "failed"
        assert "timed out after 0.1 s" in result["error"]
        assert final(events)["status"] == "failed"

    async def test_partial_failure_finishes_with_a_note(
        self,
        graph_one_attempt: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        spec, _ = make_model(fail_first=1, reply="An answer.")
        context = Context(model=spec, approval="never", mode="plan", max_replans=0)

        events = await collect_events(
            graph_one_attempt,
            thread_id=thread_id,
            context=context,
            request="What is A? What is B?",
        )

        statuses = sorted(r["status"] for r in step_results(events).values())
        assert statuses == ["done", "failed"]
        end = final(events)
        assert end["status"] == "done"
        assert "Note: this answer is incomplete" in end["answer"]
        assert end["report"]["replans"] == 0


class TestLlmPlanner:
    request = "Compare Rust with Go"

    async def test_cyclic_llm_plan_falls_back_to_rules(
        self,
        graph: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        cyclic = {
            "goal": self.request,
            "steps": [
                step("a", "A"),
                step("b", "B", ["a", "c"]),
                step("c", "C", ["b"]),
            ],
        }
        spec, _ = make_model(structured=cyclic)
        context = Context(model=spec, approval="never", mode="plan", planner="llm")

        events = await collect_events(
            graph, thread_id=thread_id, context=context, request=self.request
        )

        end = final(events)
        assert end["status"] == "done"
        state = await state_of(graph, thread_id)
        first = state["plan_history"][0]
        assert first["source"] == "rules"
        assert "cycle" in first["fallback_reason"]
        assert first["plan"] == rule_plan(self.request, max_steps=context.max_steps)
        assert set(state["results"]) == {"s1", "s2"}
        assert end["report"]["fallback_reasons"] == [first["fallback_reason"]]
        assert only(events, "plan_update")[0]["fallback_reason"] == first["fallback_reason"]

    async def test_valid_llm_plan_is_used(
        self,
        graph: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        plan = {
            "goal": self.request,
            "steps": [
                step("rust", "Describe Rust."),
                step("go", "Describe Go."),
                step("cmp", "Compare them.", ["rust", "go"]),
            ],
        }
        spec, _ = make_model(structured=plan)
        context = Context(model=spec, approval="never", mode="plan", planner="llm")

        events = await collect_events(
            graph, thread_id=thread_id, context=context, request=self.request
        )

        end = final(events)
        state = await state_of(graph, thread_id)
        first = state["plan_history"][0]
        assert first["source"] == "llm"
        assert first["fallback_reason"] is None
        assert first["plan"] == plan
        assert set(step_results(events)) == {"rust", "go", "cmp"}
        assert end["report"]["nodes"]["planner"]["total_tokens"] == 11 + 5
        assert end["report"]["fallback_reasons"] == []

    async def test_failing_llm_planner_falls_back_to_rules(
        self,
        graph: AgentGraph,
        thread_id: str,
        make_model: MakeModel,
        collect_events: CollectEvents,
    ) -> None:
        spec, _ = make_model(structured=None)
        context = Context(model=spec, approval="never", mode="plan", planner="llm")

        events = await collect_events(
            graph, thread_id=thread_id, context=context, request=self.request
        )

        assert final(events)["status"] == "done"
        first = (await state_of(graph, thread_id))["plan_history"][0]
        assert first["source"] == "rules"
        assert first["fallback_reason"].startswith("LLM plan rejected")

    async def test_llm_replan_reruns_the_failed_step(
        self, make_model: MakeModel, thread_id: str, collect_events: CollectEvents
    ) -> None:
        graph = compile_graph(InMemorySaver(), step_attempts=1)
        plan = {
            "goal": self.request,
            "steps": [
                step("s1", "Compare them."),
            ],
        }
        spec, model = make_model(structured=plan, fail_first=1, reply="Both are fine.")
        context = Context(model=spec, approval="never", mode="plan", planner="llm", max_replans=1)

        events = await collect_events(
            graph, thread_id=thread_id, context=context, request=self.request
        )

        sources = [e["source"] for e in only(events, "plan_update")]
        assert sources == ["llm", "replan"]  # the replan happens...
        assert model.calls == 2  # ...but today its step is never run again
        assert final(events)["status"] == "done"


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
