"""Orchestrator: start a run (afresh, also on a thread that ran before) and route it."""

import time
from dataclasses import asdict
from typing import Literal, assert_never

from langgraph.runtime import Runtime
from langgraph.types import Overwrite
from typing_extensions import TypedDict

from app.accounting import UsageRecord
from nodes.approval import plan_gate
from nodes.context import Context
from nodes.documents import with_documents
from nodes.events import emit
from nodes.llm import usage_record
from nodes.plans import direct_plan, use_pattern, wants_plan
from nodes.schemas import ApprovalRecord, Citation, Plan, PlanRevision, RunStatus, StepResult
from nodes.state import Node, Route, RunReport, State
from nodes.toolbox import Toolbox, toolbox_or_settings
from retrievers.service import Library


class OrchestratorUpdate(TypedDict, total=False):
    options: dict[str, object]
    route: Route
    status: RunStatus
    answer: str
    citations: list[Citation]
    report: RunReport | None
    plan: Plan
    plan_history: Overwrite | list[PlanRevision]
    results: Overwrite | dict[str, StepResult]
    approvals: Overwrite | list[ApprovalRecord]
    approved_steps: Overwrite | list[str]
    usage: Overwrite | list[UsageRecord]


def orchestrator(
    library: Library | None = None, toolbox: Toolbox | None = None
) -> Node[State, OrchestratorUpdate]:
    """Return the orchestrator node; `library` holds the collections a direct answer may use,
    `toolbox` the agents and tools it may be given (the settings' manifest's by default)."""

    async def orchestrate(state: State, runtime: Runtime[Context]) -> OrchestratorUpdate:
        """Classify the request; a direct answer gets a one-step plan without a planner.

        A thread may carry an earlier run: its results, history and usage are replaced here
        (the earlier run stays readable in the thread's checkpoints), so nothing leaks
        between runs.
        """
        return await _orchestrate(state, runtime, library, await toolbox_or_settings(toolbox))

    return orchestrate


async def _orchestrate(
    state: State, runtime: Runtime[Context], library: Library | None, toolbox: Toolbox
) -> OrchestratorUpdate:
    started = time.time()
    request = state["request"]
    mode = runtime.context.mode
    route: Route = (
        "plan" if mode == "plan" or (mode == "auto" and wants_plan(request)) else "direct"
    )
    history: list[PlanRevision] = []
    update = OrchestratorUpdate(options=asdict(runtime.context), route=route, status="running")
    _clear_earlier_run(state, update)
    if route == "direct":
        roster = toolbox.roster()
        plan, note = await with_documents(
            direct_plan(request, roster=roster), runtime.context, library
        )
        plan, committee = use_pattern(plan, runtime.context.pattern, roster)
        notes = "; ".join(n for n in (note, committee) if n)
        reason = "a single question: answered directly" + (f"; {notes}" if notes else "")
        update["plan"] = plan
        revision = PlanRevision(
            version=1, source="direct", reason=reason, plan=plan, fallback_reason=None
        )
        history.append(revision)
        emit(runtime.stream_writer, "plan_update", **revision)
    emit(
        runtime.stream_writer,
        "handoff",
        source="orchestrator",
        target=next_node(route, update.get("plan"), runtime.context),
        reason=f"route={route}",
    )
    if history or state.get("plan_history"):
        update["plan_history"] = Overwrite(history) if state.get("plan_history") else history
    record = usage_record("orchestrator", started)
    update["usage"] = Overwrite([record]) if state.get("usage") else [record]
    return update


def _clear_earlier_run(state: State, update: OrchestratorUpdate) -> None:
    """Empty what an earlier run on the thread left. On a new thread all of it is empty
    already, and each value written for nothing would cost the run's checkpoints a write."""
    if state.get("answer"):
        update["answer"] = ""
    if state.get("citations"):
        update["citations"] = []
    if state.get("report"):
        update["report"] = None
    if state.get("results"):
        update["results"] = Overwrite({})
    if state.get("approvals"):
        update["approvals"] = Overwrite([])
    if state.get("approved_steps"):
        update["approved_steps"] = Overwrite([])


def next_node(
    route: Route, plan: Plan | None, context: Context
) -> Literal["planner", "approve_plan", "dispatch"]:
    """Send planned requests to the planner; a direct answer's one-step plan goes to the
    approval gate when the policy asks for it, else straight to dispatch."""
    if route == "plan":
        return "planner"
    if route == "direct":
        assert plan is not None, "a direct route has its one-step plan"
        return plan_gate(plan, context)
    assert_never(route)


async def route_request(state: State) -> Literal["planner", "approve_plan", "dispatch"]:
    """The orchestrator's edge: where `next_node` sends the request (the run's context read
    from the state, as `nodes.approval`'s edges read it)."""
    return next_node(state["route"], state.get("plan"), Context.from_record(state["options"]))
