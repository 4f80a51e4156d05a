"""Whole runs of the compiled graph with the LLM planner: a valid plan, the fallback to the
rule planner on a cyclic plan or a failing planner, and an LLM replan."""

from langgraph.checkpoint.memory import InMemorySaver

from graphs.agent import AgentGraph, compile_graph
from nodes.context import Context
from nodes.plans import rule_plan
from tests.fakes import MakeModel

from .conftest import CollectEvents
from .graph_helpers import final, only, state_of, step, step_results


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
