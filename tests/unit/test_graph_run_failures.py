"""Whole runs of the compiled graph where things go wrong: the token budget runs out, steps
fail or time out, the critic replans or gives up, and a partial failure still finishes."""

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs.agent import AgentGraph, compile_graph
from nodes.context import Context
from tests.fakes import MakeModel

from .conftest import CollectEvents
from .graph_helpers import QUESTION, final, state_of, step_results


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
