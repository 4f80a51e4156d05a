"""Critic: score the results (coverage, grounding, budget) and accept, replan or give up."""

import time
from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from app.accounting import tokens_used
from nodes.context import Context
from nodes.dispatch import status_of
from nodes.events import emit
from nodes.llm import usage_record
from nodes.schemas import Critique, StepResult, Verdict
from nodes.state import State


def grounding_score(results: list[StepResult]) -> float | None:
    """Mean grounding of the steps that retrieve; None when no step retrieves.

    A rag step's grounding is how much of each answer sentence the chunks it cites support
    (see `nodes.grounding`); a step without that score counts as grounded when it cites. An
    answer with flagged claims is not grounded (0), unless it was replaced by the extractive
    answer, which quotes the passages it cites.
    """
    retrieving = [r for r in results if r["kind"] == "rag"]
    if not retrieving:
        return None
    scores = [
        0.0
        if r.get("flagged_claims") and not r.get("extractive")
        else g
        if (g := r.get("grounding")) is not None
        else float(bool(r["citations"]))
        for r in retrieving
    ]
    return round(sum(scores) / len(scores), 3)


def judge(state: State, context: Context) -> Critique:
    """Score the current plan's results and decide what happens next."""
    plan = state["plan"]
    results = state.get("results", {})
    current = [results[s["id"]] for s in plan["steps"] if s["id"] in results]
    failed = [s["id"] for s in plan["steps"] if status_of(results, s["id"]) != "done"]
    coverage = (len(plan["steps"]) - len(failed)) / len(plan["steps"])
    used = tokens_used(state.get("usage", []))
    exhausted = used >= context.token_budget
    replans = sum(1 for r in state.get("plan_history", []) if r["source"] == "replan")
    errors = "; ".join(
        f"{r['step_id']}: {r['error']}" for r in current if r["status"] != "done" and r["error"]
    )
    verdict: Verdict
    if exhausted:
        verdict = "give_up"
        reason = f"{context.budget_label} exhausted: {used} of {context.token_budget} tokens used"
        feedback = ""
    elif not failed:
        verdict, reason, feedback = "accept", "every step succeeded", ""
    elif replans < context.max_replans:
        verdict = "replan"
        reason = f"{len(failed)} of {len(plan['steps'])} steps did not succeed ({errors})"
        feedback = "Redo the failed steps; keep instructions short and self-contained."
    else:
        verdict = "give_up"
        reason = (
            f"{len(failed)} step(s) still failing after {replans} replan(s), "
            f"the limit ({context.max_replans}): {errors}"
        )
        feedback = ""
    return Critique(
        verdict=verdict,
        reason=reason,
        feedback=feedback,
        coverage=round(coverage, 3),
        grounding=grounding_score(current),
        failed_steps=failed,
        tokens_used=used,
        budget_exhausted=exhausted,
    )


async def criticize(
    state: State, runtime: Runtime[Context]
) -> Command[Literal["planner", "synthesize"]]:
    """Judge the results; a replan goes back to the planner with the critique."""
    started = time.time()
    critique = judge(state, runtime.context)
    target: Literal["planner", "synthesize"] = (
        "planner" if critique["verdict"] == "replan" else "synthesize"
    )
    emit(
        runtime.stream_writer,
        "handoff",
        source="critic",
        target=target,
        reason=f"{critique['verdict']}: {critique['reason']}",
    )
    return Command(
        goto=target,
        update={"critique": critique, "usage": [usage_record("critic", started)]},
    )
