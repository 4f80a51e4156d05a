"""Planner: rule-based by default, LLM with structured output when asked, always validated."""

import logging
import time

from langchain_core.exceptions import OutputParserException
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from app.accounting import UsageRecord
from app.errors import AgentGraphError
from nodes.approval import plan_gate
from nodes.context import Context
from nodes.documents import with_documents
from nodes.events import emit
from nodes.llm import Generation, generate_structured, usage_record
from nodes.plans import (
    KNOWN_KINDS,
    patch_plan,
    rename_rerun_steps,
    rule_plan,
    use_pattern,
    validate_plan,
)
from nodes.prompts import PLANNER_PROMPT, REPLAN_BLOCK
from nodes.schemas import Critique, Plan, PlanRevision, PlanSource
from nodes.state import Node, State
from nodes.toolbox import Toolbox, toolbox_or_settings
from retrievers.service import Library

logger = logging.getLogger(__name__)


class PlannerUpdate(TypedDict):
    plan: Plan
    plan_history: list[PlanRevision]
    usage: list[UsageRecord]


async def llm_plan(
    request: str, critique: Critique | None, context: Context, toolbox: Toolbox
) -> tuple[object, Generation]:
    """Ask the chat model for a plan as structured output; the result is not yet validated."""
    critique_text = (
        REPLAN_BLOCK.format(
            reason=critique["reason"],
            feedback=critique["feedback"],
            failed=", ".join(critique["failed_steps"]) or "none",
        )
        if critique
        else ""
    )
    prompt = PLANNER_PROMPT.format(
        kinds=", ".join(sorted(KNOWN_KINDS)),
        agents=_agents_block(toolbox),
        max_steps=context.max_steps,
        critique=critique_text,
        request=request,
    )
    route = context.route("planner")
    return await generate_structured(
        [SystemMessage("You write plans as JSON."), HumanMessage(prompt)],
        Plan,
        model=route.primary,
        fallbacks=route.fallbacks,
    )


def planner(
    library: Library | None = None, toolbox: Toolbox | None = None
) -> Node[State, PlannerUpdate]:
    """Return the planner node; `library` holds the collections its steps may answer from,
    `toolbox` the agents and tools they may use (the settings' manifest's by default)."""

    async def plan(state: State, runtime: Runtime[Context]) -> PlannerUpdate:
        """Write the first plan, or patch the current one after the critic asked for a
        replan."""
        return await _plan(state, runtime, library, await toolbox_or_settings(toolbox))

    return plan


def _agents_block(toolbox: Toolbox) -> str:
    lines = []
    for agent in toolbox.manifest.agents:
        tools = ", ".join(f"{t.name} ({t.effect})" for t in toolbox.granted(agent.name))
        lines.append(f"- {agent.name}: {agent.description} Tools: {tools or 'none'}.")
    return "\n".join(lines)


async def _plan(
    state: State, runtime: Runtime[Context], library: Library | None, toolbox: Toolbox
) -> PlannerUpdate:
    started = time.time()
    context = runtime.context
    request = state["request"]
    critique = state.get("critique")
    replanning = critique is not None and critique["verdict"] == "replan"
    version = len(state.get("plan_history", [])) + 1
    fallback_reason: str | None = None
    generation: Generation | None = None
    new_plan: Plan | None = None
    source: PlanSource = "replan" if replanning else "rules"
    roster = toolbox.roster()

    if context.planner == "llm":
        try:
            draft, generation = await llm_plan(
                request, critique if replanning else None, context, toolbox
            )
            new_plan = validate_plan(
                draft, known_kinds=KNOWN_KINDS, max_steps=context.max_steps, roster=roster
            )
            # An LLM replan may reuse the id of a failed step: rename it so it runs again.
            new_plan = rename_rerun_steps(new_plan, state.get("results", {}), version=version)
            if not replanning:
                source = "llm"
        except (AgentGraphError, OutputParserException, ValueError) as exc:
            fallback_reason = f"LLM plan rejected, rule-based plan used instead: {exc}"
            logger.info("planner fallback: %s", exc)

    if new_plan is None:
        if replanning and critique is not None:
            draft = patch_plan(state["plan"], critique, state.get("results", {}), version=version)
        else:
            draft = rule_plan(request, max_steps=context.max_steps, roster=roster)
        new_plan = validate_plan(
            draft, known_kinds=KNOWN_KINDS, max_steps=context.max_steps, roster=roster
        )
    new_plan, note = await with_documents(new_plan, context, library)
    new_plan, committee = use_pattern(new_plan, context.pattern, roster)
    note = "; ".join(n for n in (note, committee) if n) or None

    if replanning and critique is not None:
        reason = f"replan after critique: {critique['reason']}"
    elif source == "llm":
        reason = "planned by the LLM planner"
    else:
        reason = "planned by rules: one step per part of the request"
    if note:
        reason += f"; {note}"
    revision = PlanRevision(
        version=version,
        source=source,
        reason=reason,
        plan=new_plan,
        fallback_reason=fallback_reason,
    )
    emit(runtime.stream_writer, "plan_update", **revision)
    emit(
        runtime.stream_writer,
        "handoff",
        source="planner",
        target=plan_gate(new_plan, context),
        reason=f"plan v{version} with {len(new_plan['steps'])} steps",
    )
    return PlannerUpdate(
        plan=new_plan,
        plan_history=[revision],
        usage=[usage_record("planner", started, generation=generation)],
    )
