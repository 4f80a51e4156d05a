"""Orchestrator: answer directly, or plan."""

import time
from typing import Literal, assert_never

from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from app.accounting import UsageRecord
from nodes.context import Context
from nodes.events import emit
from nodes.llm import usage_record
from nodes.plans import direct_plan, wants_plan
from nodes.schemas import Plan, PlanRevision
from nodes.state import Route, State


class OrchestratorUpdate(TypedDict, total=False):
    route: Route
    plan: Plan
    plan_history: list[PlanRevision]
    usage: list[UsageRecord]


async def orchestrate(state: State, runtime: Runtime[Context]) -> OrchestratorUpdate:
    """Classify the request; a direct answer gets a one-step plan without a planner."""
    started = time.time()
    request = state["request"]
    mode = runtime.context.mode
    route: Route = (
        "plan" if mode == "plan" or (mode == "auto" and wants_plan(request)) else "direct"
    )
    update = OrchestratorUpdate(route=route)
    if route == "direct":
        plan = direct_plan(request)
        version = len(state.get("plan_history", [])) + 1
        reason = "a single question: answered directly"
        update["plan"] = plan
        update["plan_history"] = [
            PlanRevision(
                version=version, source="direct", reason=reason, plan=plan, fallback_reason=None
            )
        ]
        emit(
            runtime.stream_writer,
            "plan_update",
            version=version,
            source="direct",
            reason=reason,
            plan=plan,
            fallback_reason=None,
        )
    emit(
        runtime.stream_writer,
        "handoff",
        source="orchestrator",
        target="planner" if route == "plan" else "dispatch",
        reason=f"route={route}",
    )
    update["usage"] = [usage_record("orchestrator", started)]
    return update


def route_request(state: State) -> Literal["planner", "dispatch"]:
    """Send planned requests to the planner and direct ones straight to dispatch."""
    route = state["route"]
    if route == "plan":
        return "planner"
    if route == "direct":
        return "dispatch"
    assert_never(route)
