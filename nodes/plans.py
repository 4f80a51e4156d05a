"""Plans as data: validation, the rule-based planner and the rule-based patch after a critique."""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from app.errors import Location, PlanValidationError
from app.tools.registry import CALCULATOR
from nodes.schemas import Critique, Plan, Step, StepResult

KNOWN_KINDS: frozenset[str] = frozenset({"reasoning", "rag", "tool"})
"""Step kinds a worker exists for. New workers add their kind here."""

_PLAN_ADAPTER: TypeAdapter[Plan] = TypeAdapter(Plan)
_RISKY = re.compile(
    r"\b(delete|remove|drop|send|e-?mail|deploy|publish|pay|purchase|transfer|execute|"
    r"shut ?down|overwrite|wipe|cancel)\b",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.+?)\s*$")
_SENTENCE_END = re.compile(r"(?<=[?!.])\s+(?=[A-Z0-9])")
_THEN = re.compile(
    r"\s*(?:;\s*(?:and\s+)?(?:then\s+)?|,?\s+and then\s+|,?\s+then\s+)\s*", re.IGNORECASE
)
_RETRY_SUFFIX = re.compile(r"-r\d+$")
_PLAN_WORDS = re.compile(
    r"\b(compare|contrast|step[- ]by[- ]step|plan|analy[sz]e|pros and cons|trade-?offs?|"
    r"evaluate|research|investigate|outline)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Roster:
    """The agents a plan may assign steps to and the tools each may call (the toolbox's)."""

    grants: Mapping[str, frozenset[str]]
    """Each agent's tools."""
    gated: frozenset[str] = frozenset()
    """Tools that run only in a step a person approved."""
    default_agent: str = "default"
    """The agent of a step that names none."""
    hints: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    """Each tool's cue: a request part it matches is a step for that tool (rule planner)."""
    effects: Mapping[str, str] = field(default_factory=dict)
    """Each tool's effect, as the plan gate shows it."""


CALCULATOR_ONLY = Roster(
    grants={"default": frozenset({"calculator"})},
    hints={"calculator": CALCULATOR.hint} if CALCULATOR.hint else {},
    effects={"calculator": CALCULATOR.effect},
)
"""What the rule planner assumes when it is given no roster."""


def validate_plan(
    raw: object, *, known_kinds: Iterable[str], max_steps: int, roster: Roster | None = None
) -> Plan:
    """Check a plan's shape and its rules, and return it normalised.

    Rules: at least one step and at most `max_steps`; unique ids; known kinds; dependencies
    that name existing steps other than themselves; at least one entry step; no cycles.
    With a `roster`, also: known agents; tools only on tool steps, each granted to the step's
    agent. A tool step then names its agent and tools (by default the first agent and all
    it may call), and requires approval when one of its tools is gated.

    Raises:
        PlanValidationError: with every problem found.
    """
    try:
        plan = _PLAN_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors()
        raise PlanValidationError(
            [f"{'.'.join(str(p) for p in e['loc']) or 'plan'}: {e['msg']}" for e in errors],
            where=[tuple(e["loc"]) for e in errors],
        ) from None
    kinds = set(known_kinds)
    steps = plan["steps"]
    found: list[tuple[Location, str]] = []
    if not steps:
        found.append((("steps",), "the plan has no steps"))
    if len(steps) > max_steps:
        found.append(
            (("steps",), f"the plan has {len(steps)} steps; at most {max_steps} are allowed")
        )
    ids = [s["id"] for s in steps]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        where = ("steps", ids.index(dupes[0], ids.index(dupes[0]) + 1), "id")
        found.append((where, f"duplicate step ids: {', '.join(dupes)}"))
    known_ids = set(ids)
    for index, s in enumerate(steps):
        if s["kind"] not in kinds:
            found.append(
                (
                    ("steps", index, "kind"),
                    f"step {s['id']}: unknown kind {s['kind']!r} "
                    f"(known: {', '.join(sorted(kinds))})",
                )
            )
        for dep in s["depends_on"]:
            if dep == s["id"]:
                found.append((("steps", index, "depends_on"), f"step {s['id']} depends on itself"))
            elif dep not in known_ids:
                found.append(
                    (
                        ("steps", index, "depends_on"),
                        f"step {s['id']} depends on unknown step {dep!r}",
                    )
                )
    if steps and not any(not s["depends_on"] for s in steps):
        found.append((("steps",), "no entry step: every step depends on another"))
    if not found and _has_cycle(steps):
        found.append((("steps",), "the dependencies form a cycle"))
    if roster is not None:
        found.extend(
            (("steps", index), p)
            for index, s in enumerate(steps)
            for p in _roster_problems(s, roster)
        )
    if found:
        raise PlanValidationError([p for _, p in found], where=[w for w, _ in found])
    return plan if roster is None else assign(plan, roster)


def _roster_problems(step: Step, roster: Roster) -> list[str]:
    agent = step.get("agent", roster.default_agent)
    if agent not in roster.grants:
        return [f"step {step['id']}: unknown agent {agent!r} (agents: {', '.join(roster.grants)})"]
    if "pattern" in step or "members" in step:
        return _committee_problems(step, roster)
    tools = step.get("tools")
    if tools is None:
        tools = sorted(roster.grants[agent]) if step["kind"] == "tool" else []
        if step["kind"] == "tool" and not tools:
            return [f"step {step['id']}: agent {agent!r} may call no tool, so it runs no tool step"]
    if tools and step["kind"] != "tool":
        return [f"step {step['id']}: only a tool step calls tools (this one is {step['kind']!r})"]
    known = set().union(*roster.grants.values())
    problems = []
    for tool in tools:
        if tool not in known:
            problems.append(f"step {step['id']}: unknown tool {tool!r}")
        elif tool not in roster.grants[agent]:
            granted = ", ".join(sorted(roster.grants[agent])) or "none"
            problems.append(
                f"step {step['id']}: agent {agent!r} may not call {tool!r} (granted: {granted})"
            )
    return problems


def _committee_problems(step: Step, roster: Roster) -> list[str]:
    if step["kind"] != "reasoning":
        what = "a supervisor" if step.get("pattern") == "supervisor" else "a committee"
        return [f"step {step['id']}: only a reasoning step is answered by {what}"]
    members = step.get("members", list(roster.grants)[:COMMITTEE_SIZE])
    unknown = [m for m in members if m not in roster.grants]
    if unknown:
        agents = ", ".join(roster.grants)
        return [f"step {step['id']}: unknown committee member {unknown[0]!r} (agents: {agents})"]
    if len(set(members)) < 2:
        what = "a supervisor and a worker" if step.get("pattern") == "supervisor" else "a committee"
        return [f"step {step['id']}: {what} needs two different agents or more"]
    return []


COMMITTEE_SIZE = 3
"""The agents of a committee step that names none: the manifest's first three."""


def use_pattern(plan: Plan, pattern: str, roster: Roster) -> tuple[Plan, str | None]:
    """Give every reasoning step to a committee, or to a supervisor and its workers, when the
    run asks for one, and say so. The first of the members supervises.

    A roster of one agent has neither: the plan is left as it is, with the reason.
    """
    if pattern not in ("committee", "supervisor"):
        return plan, None
    members = list(roster.grants)[:COMMITTEE_SIZE]
    if len(members) < 2:
        return plan, f"no {pattern}: the manifest has one agent, and a {pattern} needs two"
    chosen = [s["id"] for s in plan["steps"] if s["kind"] == "reasoning"]
    if not chosen:
        return plan, None
    kind: Literal["committee", "supervisor"] = (
        "supervisor" if pattern == "supervisor" else "committee"
    )
    steps = [
        Step(**{**s, "pattern": kind, "members": s.get("members", members)})
        if s["id"] in chosen
        else s
        for s in plan["steps"]
    ]
    if pattern == "supervisor":
        note = f"{', '.join(chosen)} supervised by {members[0]} with {', '.join(members[1:])}"
    else:
        note = f"{', '.join(chosen)} answered by a committee of {', '.join(members)}"
    return Plan(goal=plan["goal"], steps=steps), note


def assign(plan: Plan, roster: Roster) -> Plan:
    """Name each tool step's agent and tools, and require approval where a tool is gated."""
    steps: list[Step] = []
    for s in plan["steps"]:
        if s["kind"] != "tool":
            steps.append(s)
            continue
        agent = s.get("agent", roster.default_agent)
        tools = s.get("tools", sorted(roster.grants.get(agent, ())))
        gated = bool(set(tools) & roster.gated)
        approval = s["requires_approval"] or gated
        steps.append(Step(**{**s, "agent": agent, "tools": tools, "requires_approval": approval}))
    return Plan(goal=plan["goal"], steps=steps)


def _has_cycle(steps: list[Step]) -> bool:
    remaining = {s["id"]: set(s["depends_on"]) for s in steps}
    while remaining:
        ready = [i for i, deps in remaining.items() if not deps]
        if not ready:
            return True
        for i in ready:
            del remaining[i]
        for deps in remaining.values():
            deps.difference_update(ready)
    return False


def split_request(request: str) -> list[list[str]]:
    """Split a request into ordered stages of independent parts.

    Bulleted or numbered lines and separate sentences become parallel parts; "then" and ";"
    make later stages that depend on earlier ones.
    """
    lines = [m.group(1) for line in request.splitlines() if (m := _LIST_ITEM.match(line))]
    if len(lines) >= 2:
        return [lines]
    stages = [p for p in _THEN.split(request.strip()) if p]
    if len(stages) >= 2:
        return [[p.strip(" .")] for p in stages]
    sentences = [s.strip() for s in _SENTENCE_END.split(request.strip()) if s.strip()]
    questions = [s for s in sentences if len(s.split()) >= 3]
    return [questions] if len(questions) >= 2 else [[request.strip()]]


def wants_plan(request: str) -> bool:
    """Decide, by rule, whether a request needs a plan rather than a direct answer."""
    parts = [p for stage in split_request(request) for p in stage]
    return len(parts) >= 2 or len(request.split()) > 40 or bool(_PLAN_WORDS.search(request))


def _step(step_id: str, instruction: str, depends_on: list[str], roster: Roster) -> Step:
    risky = bool(_RISKY.search(instruction))
    assigned = _tools_for(instruction, roster)
    if assigned is None:
        return Step(
            id=step_id,
            kind="reasoning",
            instruction=instruction,
            depends_on=depends_on,
            requires_approval=risky,
        )
    agent, tools = assigned
    return Step(
        id=step_id,
        kind="tool",
        instruction=instruction,
        depends_on=depends_on,
        requires_approval=risky or bool(set(tools) & roster.gated),
        agent=agent,
        tools=tools,
    )


def _tools_for(instruction: str, roster: Roster) -> tuple[str, list[str]] | None:
    """The agent and tools whose cues the instruction matches: the default agent first."""
    wanted = [t for t, hint in roster.hints.items() if hint.search(instruction)]
    if not wanted:
        return None
    for agent in sorted(roster.grants, key=lambda a: a != roster.default_agent):
        tools = [t for t in wanted if t in roster.grants[agent]]
        if tools:
            return agent, tools
    return None


def use_documents(plan: Plan, collection: str | None) -> Plan:
    """Turn every reasoning step into a rag step when the run names a document collection."""
    if collection is None:
        return plan
    steps = [
        Step(**{**s, "kind": "rag" if s["kind"] == "reasoning" else s["kind"]})
        for s in plan["steps"]
    ]
    return Plan(goal=plan["goal"], steps=steps)


def direct_plan(request: str, *, roster: Roster = CALCULATOR_ONLY) -> Plan:
    """Return the one-step plan of a direct answer."""
    return Plan(goal=request, steps=[_step("answer", request, [], roster)])


def rule_plan(request: str, *, max_steps: int, roster: Roster = CALCULATOR_ONLY) -> Plan:
    """Plan by rule: one reasoning step per part of the request, stages in order.

    A request with a single part gets two steps: gather what is needed, then answer.
    """
    stages = split_request(request)
    if len(stages) == 1 and len(stages[0]) == 1:
        return Plan(
            goal=request,
            steps=[
                _step(
                    "s1",
                    f"List the key facts and concepts needed to answer: {request}",
                    [],
                    roster,
                ),
                _step("s2", f"Using those facts, answer: {request}", ["s1"], roster),
            ],
        )
    steps: list[Step] = []
    previous: list[str] = []
    for stage in stages:
        current: list[str] = []
        for part in stage:
            if len(steps) == max_steps:
                break
            step_id = f"s{len(steps) + 1}"
            steps.append(_step(step_id, part, list(previous), roster))
            current.append(step_id)
        previous = current or previous
    return Plan(goal=request, steps=steps)


def _base_id(step_id: str) -> str:
    return _RETRY_SUFFIX.sub("", step_id)


def rename_rerun_steps(plan: Plan, results: dict[str, StepResult], *, version: int) -> Plan:
    """Give a fresh id (`s2-r3`) to every step that already has an unsuccessful result, so it
    runs again; dependencies follow the rename. Steps that succeeded keep their ids and results.
    """
    renamed = {
        s["id"]: f"{_base_id(s['id'])}-r{version}"
        for s in plan["steps"]
        if s["id"] in results and results[s["id"]]["status"] != "done"
    }
    if not renamed:
        return plan
    steps = [
        Step(
            **{
                **s,
                "id": renamed.get(s["id"], s["id"]),
                "depends_on": [renamed.get(d, d) for d in s["depends_on"]],
            }
        )
        for s in plan["steps"]
    ]
    return Plan(goal=plan["goal"], steps=steps)


def patch_plan(
    plan: Plan, critique: Critique, results: dict[str, StepResult], *, version: int
) -> Plan:
    """Replace the steps the critic flagged with fresh ones, keeping finished steps.

    A replaced step gets a new id (`s2-r2`) so its earlier result stays in the history, and
    its instruction carries the critic's feedback and the failure it is meant to avoid.
    """
    flagged = set(critique["failed_steps"])
    renamed = {i: f"{_base_id(i)}-r{version}" for i in flagged}
    steps: list[Step] = []
    for s in plan["steps"]:
        deps = [renamed.get(d, d) for d in s["depends_on"]]
        if s["id"] not in flagged:
            steps.append(Step(**{**s, "depends_on": deps}))
            continue
        previous = results.get(s["id"])
        why = previous["error"] if previous and previous["error"] else critique["reason"]
        instruction = _base_instruction(s["instruction"])
        retry = f"\n(Retry: the previous attempt did not succeed: {why}. {critique['feedback']})"
        steps.append(
            Step(
                **{
                    **s,
                    "id": renamed[s["id"]],
                    "instruction": instruction + retry,
                    "depends_on": deps,
                }
            )
        )
    return Plan(goal=plan["goal"], steps=steps)


def _base_instruction(instruction: str) -> str:
    return instruction.split("\n(Retry:", 1)[0]
