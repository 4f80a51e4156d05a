"""Dispatch: fan ready steps out to workers with `Send`, join them, and route to the critic."""

import time
from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Send
from typing_extensions import TypedDict

from app.accounting import UsageRecord, tokens_used
from nodes.context import Context
from nodes.events import emit
from nodes.llm import usage_record
from nodes.schemas import Plan, Step, StepResult, StepUsage
from nodes.state import State, WorkerInput

_NO_USAGE = StepUsage(input_tokens=0, output_tokens=0, cost=0.0)


class DispatchUpdate(TypedDict, total=False):
    results: dict[str, StepResult]
    usage: list[UsageRecord]


def budget_spent(state: State, context: Context) -> bool:
    """Tell whether the run has spent its token budget."""
    return tokens_used(state.get("usage", [])) >= context.token_budget


def status_of(results: dict[str, StepResult], step_id: str) -> str | None:
    """Return a step's status, or None when it has not run."""
    result = results.get(step_id)
    return result["status"] if result else None


def ready_steps(plan: Plan, results: dict[str, StepResult]) -> list[Step]:
    """Return the steps not yet run whose dependencies all finished successfully."""
    return [
        s
        for s in plan["steps"]
        if s["id"] not in results and all(status_of(results, d) == "done" for d in s["depends_on"])
    ]


def _skipped(step: Step, why: str) -> StepResult:
    return StepResult(
        step_id=step["id"],
        kind=step["kind"],
        status="skipped",
        output="",
        citations=[],
        usage=_NO_USAGE,
        attempts=0,
        latency_ms=0.0,
        error=why,
    )


def blocked_steps(
    plan: Plan,
    results: dict[str, StepResult],
    *,
    budget_exhausted: bool,
    budget_label: str = "token budget",
) -> dict[str, StepResult]:
    """Mark as skipped the steps that can no longer run: a dependency failed, or no budget."""
    blocked: dict[str, StepResult] = {}
    changed = True
    while changed:
        changed = False
        for s in plan["steps"]:
            if s["id"] in results or s["id"] in blocked:
                continue
            if budget_exhausted:
                blocked[s["id"]] = _skipped(s, f"not run: the {budget_label} is spent")
                changed = True
                continue
            bad = [
                d
                for d in s["depends_on"]
                if (r := results.get(d) or blocked.get(d)) is not None and r["status"] != "done"
            ]
            if bad:
                blocked[s["id"]] = _skipped(
                    s, f"not run: dependency {', '.join(bad)} did not succeed"
                )
                changed = True
    return blocked


async def dispatch(state: State, runtime: Runtime[Context]) -> DispatchUpdate:
    """Skip steps that cannot run, and announce the handoff of each ready step."""
    started = time.time()
    plan = state["plan"]
    results = state.get("results", {})
    blocked = blocked_steps(
        plan,
        results,
        budget_exhausted=budget_spent(state, runtime.context),
        budget_label=runtime.context.budget_label,
    )
    for result in blocked.values():
        emit(runtime.stream_writer, "step_result", result=result)
    for step in ready_steps(plan, {**results, **blocked}):
        emit(
            runtime.stream_writer,
            "handoff",
            source="dispatch",
            target=step["kind"],
            step_id=step["id"],
            reason=step["instruction"],
        )
    update = DispatchUpdate(usage=[usage_record("dispatch", started)])
    if blocked:
        update["results"] = blocked
    return update


async def fan_out(state: State) -> list[Send] | Literal["critic"]:
    """Send every ready step to its worker, in parallel; when none is left, go to the critic.

    Workers return here, so dispatch is also the join: the next wave starts once the current
    one has finished.
    """
    plan = state["plan"]
    results = state.get("results", {})
    used = tokens_used(state.get("usage", []))
    approved = set(state.get("approved_steps", []))
    approval = approval_of(state)
    sends = [
        Send(
            worker_of(step),
            WorkerInput(
                request=state["request"],
                step=step,
                dependencies=[results[d] for d in step["depends_on"]],
                tokens_used=used,
                approval=approval if step["id"] in approved else None,
            ),
        )
        for step in ready_steps(plan, results)
    ]
    return sends or "critic"


def worker_of(step: Step) -> str:
    """The node that runs a step: its kind's worker, or its pattern's (committee, supervisor)."""
    pattern = step.get("pattern")
    return pattern if step["kind"] == "reasoning" and pattern is not None else step["kind"]


def approval_of(state: State) -> str | None:
    """Describe the latest plan approval: who gave it, when, and how."""
    records = [r for r in state.get("approvals", []) if r["gate"] == "plan"]
    if not records or records[-1]["decision"] == "reject":
        return None
    last = records[-1]
    verb = "approved" if last["decision"] == "approve" else "edited and approved"
    return f"{verb} by {last.get('by') or 'a person'} at {last['at']}"
