"""Approval points: `interrupt()` with a payload a person can judge, resumed by one decision.

Nothing runs before the interrupt but reading state, so re-running the node on resume is safe.
"""

import time
from datetime import UTC, datetime
from typing import Literal, assert_never

from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt
from pydantic import TypeAdapter, ValidationError

from app.errors import InvalidDecisionError, PlanValidationError
from app.settings import TimeoutAction
from nodes.context import Context
from nodes.events import emit
from nodes.llm import usage_record
from nodes.plans import KNOWN_KINDS, Roster, validate_plan
from nodes.schemas import (
    ApprovalDecision,
    ApprovalRecord,
    ApprovalRequest,
    Gate,
    Plan,
    PlanRevision,
)
from nodes.state import Node, State
from nodes.toolbox import Toolbox, toolbox_or_settings

_DECISION: TypeAdapter[ApprovalDecision] = TypeAdapter(ApprovalDecision)
RESUME_HELP = {
    "approve": '{"decision": "approve"}',
    "reject": '{"decision": "reject", "reason": "why"}',
    "edit": '{"decision": "edit", "plan": {"goal": ..., "steps": [...]}}',
}
TIMED_OUT = "timed out"
"""The reason of a decision that a gate's deadline took (`approval_timeout`)."""
DEADLINE = "deadline"
"""Who took a decision when a gate's deadline passed (`ApprovalDecision.by`)."""


def parse_decision(
    raw: object, *, max_steps: int, roster: Roster | None = None
) -> ApprovalDecision:
    """Validate a resume value; an edited plan is validated like any plan (against the
    agents and tools of `roster` when one is given).

    Raises:
        InvalidDecisionError: the value is not a decision, or an edit carries a bad plan.
    """
    if isinstance(raw, dict):
        raw = {"reason": None, "plan": None, **raw}
    try:
        decision = _DECISION.validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in errors
        )
        raise InvalidDecisionError(
            f"bad approval decision: {problems}",
            detail=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in errors],
        ) from None
    if decision["decision"] == "edit":
        if decision["plan"] is None:
            raise InvalidDecisionError(
                "an 'edit' decision needs a 'plan'",
                detail=[{"loc": ["plan"], "msg": "an 'edit' decision needs a 'plan'"}],
            )
        try:
            decision["plan"] = validate_plan(
                decision["plan"], known_kinds=KNOWN_KINDS, max_steps=max_steps, roster=roster
            )
        except PlanValidationError as exc:
            raise InvalidDecisionError(
                f"the edited plan is invalid: {exc}",
                detail=[{"loc": ["plan", *loc], "msg": msg} for loc, msg in exc.located()],
            ) from None
    if decision["decision"] == "reject" and not (decision["reason"] or "").strip():
        decision["reason"] = "rejected without a reason"
    return decision


def needs_plan_approval(plan: Plan, context: Context) -> bool:
    """Apply the run's approval policy to a plan."""
    policy = context.approval
    if policy == "always":
        return True
    if policy == "when_required":
        return any(s["requires_approval"] for s in plan["steps"])
    if policy == "never":
        return False
    assert_never(policy)


def plan_gate(plan: Plan, context: Context) -> Literal["approve_plan", "dispatch"]:
    """Where a plan goes next: the approval gate when the run's policy asks for it."""
    return "approve_plan" if needs_plan_approval(plan, context) else "dispatch"


# Edges are coroutines: in an async run LangGraph calls a plain function in a worker thread.
# They read the run's context from the state (`Context.from_record`): LangGraph also runs
# them outside a run, for a fork's `update_state`, where there is no runtime.


async def route_plan(state: State) -> Literal["approve_plan", "dispatch"]:
    """The planner's edge: the approval gate when the policy asks for this plan."""
    return plan_gate(state["plan"], Context.from_record(state["options"]))


async def route_answer(state: State) -> Literal["approve_final", "finalize"]:
    """Stop at the final gate only when the run asked for it."""
    wanted = Context.from_record(state["options"]).approve_final
    return "approve_final" if wanted and state.get("status") != "rejected" else "finalize"


def is_low_risk(plan: Plan, roster: Roster | None = None) -> bool:
    """Whether a gate over `plan` is low-risk: no step requires approval (the planner flags
    steps with side effects, and tool steps with a gated tool) and no step may call a tool
    that `roster`'s policy gates. Only a low-risk gate may be approved by its deadline."""
    gated = roster.gated if roster is not None else frozenset()
    return not any(s["requires_approval"] or gated & set(s.get("tools", [])) for s in plan["steps"])


def timeout_action(action: TimeoutAction, *, low_risk: bool) -> TimeoutAction:
    """What a passed deadline does to a gate: `approve` escalates a gate that is not
    low-risk instead."""
    return "escalate" if action == "approve" and not low_risk else action


def with_deadline(
    request: ApprovalRequest,
    context: Context,
    *,
    roster: Roster | None = None,
    now: datetime | None = None,
) -> ApprovalRequest:
    """Add the gate's deadline to its payload: when it passes (`now` plus the run's
    `approval_timeout`, or never) and what it does then (`timeout_action`)."""
    wait = context.approval_wait
    low_risk = is_low_risk(request["plan"], roster)
    if wait is None:
        return ApprovalRequest(
            **{**request, "deadline": None, "on_timeout": None, "low_risk": low_risk}
        )
    deadline = (now or datetime.now(UTC)) + wait
    return ApprovalRequest(
        **{
            **request,
            "deadline": deadline.isoformat(timespec="milliseconds"),
            "on_timeout": timeout_action(context.approval_timeout_action, low_risk=low_risk),
            "low_risk": low_risk,
        }
    )


def _ask(
    gate: Gate, request: ApprovalRequest, *, max_steps: int, roster: Roster | None = None
) -> ApprovalDecision:
    """Interrupt until a valid decision arrives; an invalid one is asked again with its error."""
    while True:
        raw = interrupt(request)
        try:
            return parse_decision(raw, max_steps=max_steps, roster=roster)
        except InvalidDecisionError as exc:
            request = ApprovalRequest(**{**request, "error": str(exc)})


def _record(gate: Gate, decision: ApprovalDecision) -> ApprovalRecord:
    return ApprovalRecord(
        gate=gate,
        decision=decision["decision"],
        reason=decision["reason"],
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        by=decision.get("by"),
    )


PlanGate = Node[State, Command[Literal["dispatch", "finalize"]]]


def plan_approval(toolbox: Toolbox | None = None) -> PlanGate:
    """Return the plan gate; an edited plan is checked against `toolbox`'s agents and tools
    (the settings' manifest's by default)."""

    async def approve_plan(
        state: State, runtime: Runtime[Context]
    ) -> Command[Literal["dispatch", "finalize"]]:
        """Ask a person to approve, reject or edit the plan when the policy says so."""
        return _approve_plan(state, runtime, (await toolbox_or_settings(toolbox)).roster())

    return approve_plan


def risk_of(plan: Plan, roster: Roster) -> str:
    """Say which steps need approval, and which of their tools change or reach the world."""
    flagged = [s["id"] for s in plan["steps"] if s["requires_approval"]]
    if not flagged:
        return "no step is flagged as risky; the policy asks for every plan"
    tools = []
    for s in plan["steps"]:
        gated = [
            f"{t} ({roster.effects.get(t, 'gated')})"
            for t in s.get("tools", [])
            if t in roster.gated
        ]
        if gated:
            tools.append(f"{s['id']} may call {', '.join(gated)}")
    risk = (
        f"step {flagged[0]} has side effects and requires approval"
        if len(flagged) == 1
        else f"steps {', '.join(flagged)} have side effects and require approval"
    )
    return risk + (f": {'; '.join(tools)}" if tools else "")


def _approve_plan(
    state: State, runtime: Runtime[Context], roster: Roster
) -> Command[Literal["dispatch", "finalize"]]:
    plan = state["plan"]
    context = runtime.context
    if not needs_plan_approval(plan, context):
        return Command(goto="dispatch")
    risk = risk_of(plan, roster)
    decision = _ask(
        "plan",
        with_deadline(
            ApprovalRequest(
                gate="plan",
                thread_id=runtime.execution_info.thread_id if runtime.execution_info else None,
                reason=f"approval policy '{context.approval}': the plan needs a person's decision",
                risk=risk,
                plan=plan,
                answer=None,
                error=None,
                resume=RESUME_HELP,
            ),
            context,
            roster=roster,
        ),
        max_steps=context.max_steps,
        roster=roster,
    )
    started = time.time()
    record = _record("plan", decision)
    usage = [usage_record("approve_plan", started)]
    if decision["decision"] == "approve":
        approved = [s["id"] for s in plan["steps"]]
        return Command(
            goto="dispatch",
            update={"approvals": [record], "usage": usage, "approved_steps": approved},
        )
    if decision["decision"] == "reject":
        return Command(
            goto="finalize",
            update={
                "approvals": [record],
                "usage": usage,
                "status": "rejected",
                "answer": f"The plan was rejected: {decision['reason']}",
                "citations": [],
            },
        )
    edited = decision["plan"]
    assert edited is not None
    version = len(state.get("plan_history", [])) + 1
    reason = f"edited by a person: {decision['reason'] or 'no reason given'}"
    revision = PlanRevision(
        version=version, source="edit", reason=reason, plan=edited, fallback_reason=None
    )
    emit(runtime.stream_writer, "plan_update", **revision)
    return Command(
        goto="dispatch",
        update={
            "approvals": [record],
            "usage": usage,
            "plan": edited,
            "plan_history": [revision],
            "approved_steps": [s["id"] for s in edited["steps"]],
        },
    )


async def approve_final(state: State, runtime: Runtime[Context]) -> Command[Literal["finalize"]]:
    """Ask a person to approve the final answer when the context turns this gate on."""
    context = runtime.context
    if not context.approve_final or state.get("status") == "rejected":
        return Command(goto="finalize")
    request = with_deadline(
        ApprovalRequest(
            gate="final",
            thread_id=runtime.execution_info.thread_id if runtime.execution_info else None,
            reason="the final answer needs a person's approval",
            risk="the answer will be returned to the caller as final",
            plan=state["plan"],
            answer=state.get("answer"),
            error=None,
            resume={k: v for k, v in RESUME_HELP.items() if k != "edit"},
        ),
        context,
    )
    while True:
        decision = _ask("final", request, max_steps=context.max_steps)
        if decision["decision"] != "edit":
            break
        request = ApprovalRequest(
            **{**request, "error": "the final answer can be approved or rejected, not edited"}
        )
    started = time.time()
    update: dict[str, object] = {
        "approvals": [_record("final", decision)],
        "usage": [usage_record("approve_final", started)],
    }
    if decision["decision"] == "reject":
        update["status"] = "rejected"
        update["answer"] = f"The answer was rejected: {decision['reason']}"
    return Command(goto="finalize", update=update)
