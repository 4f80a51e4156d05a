"""Finalize: write the run report (tokens, cost, latency per node; plan history; approvals)."""

import time
from typing import NotRequired

from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from app.accounting import UsageRecord, active_ms, per_node
from app.model_routes import FallbackTaken
from nodes.context import Context
from nodes.events import emit
from nodes.llm import usage_record
from nodes.schemas import RunStatus
from nodes.state import RunReport, State


class FinalizeUpdate(TypedDict):
    status: NotRequired[RunStatus]
    report: RunReport
    usage: list[UsageRecord]


def build_report(state: State, context: Context, status: RunStatus) -> RunReport:
    """Summarise a run's usage records, plan history, approvals and verdict."""
    usage = state.get("usage", [])
    nodes = per_node(usage)
    history = state.get("plan_history", [])
    critique = state.get("critique")
    results = state.get("results", {})
    input_tokens = sum(n["input_tokens"] for n in nodes.values())
    output_tokens = sum(n["output_tokens"] for n in nodes.values())
    return RunReport(
        status=status,
        total_tokens=input_tokens + output_tokens,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_cost=round(sum(n["cost"] for n in nodes.values()), 8),
        latency_ms=round(active_ms(usage), 1),
        token_budget=context.token_budget,
        budget_exhausted=bool(critique and critique["budget_exhausted"]),
        tokens_estimated=any(r["estimated"] for r in usage),
        nodes=nodes,
        steps=[
            {
                "step_id": r["step_id"],
                "kind": r["kind"],
                "status": r["status"],
                "attempts": r["attempts"],
                "latency_ms": round(r["latency_ms"], 1),
                "tokens": r["usage"]["input_tokens"] + r["usage"]["output_tokens"],
                "error": r["error"],
                **({"grounding": r.get("grounding")} if r["kind"] == "rag" else {}),
                **({"model": r["model"]} if r.get("model") else {}),
                **({"fallbacks": r["fallbacks"]} if r.get("fallbacks") else {}),
                **(
                    {
                        "committee": [v["agent"] for v in r["votes"]],
                        "chosen": r["judgement"]["chosen"],
                        "judged_by": r["judgement"]["model"],
                    }
                    if "votes" in r and "judgement" in r
                    else {}
                ),
            }
            for r in results.values()
        ],
        plan_versions=len(history),
        replans=sum(1 for r in history if r["source"] == "replan"),
        fallback_reasons=[r["fallback_reason"] for r in history if r["fallback_reason"]],
        approvals=state.get("approvals", []),
        verdict=critique["verdict"] if critique else None,
        verdict_reason=critique["reason"] if critique else None,
        grounding=critique["grounding"] if critique else None,
        model_fallbacks=fallbacks_taken(usage),
    )


def fallbacks_taken(usage: list[UsageRecord]) -> list[FallbackTaken]:
    """Every model fallback of the run's calls, in the order the calls ended."""
    return [
        FallbackTaken(
            model=fallback["model"],
            reason=fallback["reason"],
            error=fallback["error"],
            node=record["node"],
            step_id=record["step_id"],
            answered_by=fallback.get("answered_by", record["model"]),
        )
        for record in sorted(usage, key=lambda r: r["ended_at"])
        for fallback in record.get("fallbacks", [])
    ]


async def finalize(state: State, runtime: Runtime[Context]) -> FinalizeUpdate:
    """Close the run: its status, its report, and the `final` event."""
    started = time.time()
    status: RunStatus = state.get("status", "done")
    if status == "running":  # every path sets the outcome before here; be safe, not silent
        status = "failed"
    record = usage_record("finalize", started)
    report = build_report(
        {**state, "usage": [*state.get("usage", []), record]}, runtime.context, status
    )
    emit(
        runtime.stream_writer,
        "final",
        status=status,
        answer=state.get("answer", ""),
        citations=state.get("citations", []),
        report=report,
    )
    update = FinalizeUpdate(report=report, usage=[record])
    if status != state.get("status"):  # the outcome is usually written already
        update["status"] = status
    return update
