"""Orchestrator: answer directly, or plan."""

import time
from dataclasses import asdict
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
    options: dict[str, object]
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
    update = OrchestratorUpdate(route=route, options=asdict(runtime.context))
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
        target="planner" if route == "plan" else "approve_plan",
        reason=f"route={route}",
    )
    update["usage"] = [usage_record("orchestrator", started)]
    return update


def route_request(state: State) -> Literal["planner", "approve_plan"]:
    """Send planned requests to the planner; a direct answer's one-step plan goes to approval
    (which lets it through unless the policy asks for every plan)."""
    route = state["route"]
    if route == "plan":
        return "planner"
    if route == "direct":
        return "approve_plan"
    assert_never(route)
