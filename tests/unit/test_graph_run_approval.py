"""Approval gates in whole runs of the compiled graph: the plan gate (approve, reject, edit,
an invalid decision, risky plans only) and the final-answer gate."""

from graphs.agent import AgentGraph
from graphs.runs import RunEvent
from graphs.threads import view_thread
from nodes.context import Context
from tests.fakes import MakeModel

from .conftest import CollectEvents
from .graph_helpers import QUESTION, final, names, only, state_of, step, step_results


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
