"""Synthesize: the final answer from the step results, with citations, never hiding a failure."""

import time

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from app.accounting import UsageRecord
from nodes.context import Context
from nodes.llm import Generation, generate, usage_record
from nodes.prompts import SYNTHESIZE_PROMPT, SYSTEM_PROMPT
from nodes.schemas import Citation, Plan, RunStatus, StepResult
from nodes.state import State


class SynthesizeUpdate(TypedDict):
    answer: str
    citations: list[Citation]
    status: RunStatus
    usage: list[UsageRecord]


def _citations(results: list[StepResult]) -> list[Citation]:
    seen: dict[str, Citation] = {}
    for r in results:
        for c in r["citations"]:
            seen.setdefault(c["chunk_id"], c)
    return list(seen.values())


def _partial(done: list[StepResult]) -> str:
    return "\n".join(f"- [{r['step_id']}] {r['output']}" for r in done) or "(no step succeeded)"


def final_results(plan: Plan, done: list[StepResult]) -> list[StepResult]:
    """Return the successful results of the steps no other step depends on."""
    needed = {d for s in plan["steps"] for d in s["depends_on"]}
    return [r for r in done if r["step_id"] not in needed]


def synthesis_mode(context: Context) -> str:
    """Resolve `auto`: the small local model cannot merge answers reliably (it drops parts),
    so its parallel answers are composed side by side; other models write a synthesis."""
    if context.synthesis != "auto":
        return context.synthesis
    return "compose" if context.route("synthesis").primary == "local" else "model"


async def synthesize(state: State, runtime: Runtime[Context]) -> SynthesizeUpdate:
    """Write the answer: by the model when results allow, by rule when budget or steps ran out."""
    started = time.time()
    context = runtime.context
    critique = state["critique"]
    plan = state["plan"]
    results = state.get("results", {})
    current = [results[s["id"]] for s in plan["steps"] if s["id"] in results]
    done = [r for r in current if r["status"] == "done"]
    generation: Generation | None = None

    if critique["budget_exhausted"]:
        answer = f"Stopped early: {critique['reason']}.\nPartial results:\n{_partial(done)}"
    elif not done:
        answer = f"No answer: {critique['reason']}."
    elif len(leaves := final_results(plan, done)) == 1:
        answer = leaves[0]["output"]  # the last step already answered, seeing the others
    elif synthesis_mode(context) == "compose":
        answer = "\n\n".join(
            f"{s['instruction']}\n{r['output']}"
            for s in plan["steps"]
            for r in leaves
            if r["step_id"] == s["id"]
        )
    else:
        findings = "\n".join(
            f"- [{r['step_id']}] {s['instruction']}: {r['output']}"
            for s in plan["steps"]
            for r in done
            if r["step_id"] == s["id"]
        )
        route = context.route("synthesis")
        generation = await generate(
            [
                SystemMessage(SYSTEM_PROMPT),
                HumanMessage(SYNTHESIZE_PROMPT.format(request=state["request"], findings=findings)),
            ],
            model=route.primary,
            fallbacks=route.fallbacks,
            writer=runtime.stream_writer,
            node="synthesize",
            max_tokens=context.max_output_tokens,
        )
        answer = generation.text or _partial(done)
    if done and critique["verdict"] == "give_up" and not critique["budget_exhausted"]:
        answer += f"\n\nNote: this answer is incomplete: {critique['reason']}."
    return SynthesizeUpdate(
        answer=answer,
        citations=_citations(done),
        status="done" if done else "failed",
        usage=[usage_record("synthesize", started, generation=generation)],
    )
