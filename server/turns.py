"""A turn of a conversation on any surface that talks in messages (`/v1` chat and responses,
A2A): a new question, or the answer to the thread's approval, run as a run of the same graph
on the same Postgres threads as every other surface; and the answer's text as the run writes
it. A plan waiting for approval on one surface can be answered on any other.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

from app.auth import Principal
from app.errors import ConfigError, ThreadNotFoundError
from graphs.driver import RunOrder
from graphs.threads import get_snapshot
from server.auth import claim, guard
from server.deps import Services
from server.runner import RunHandle
from server.schemas import RunOptions, RunResult

HOW_TO_ANSWER = (
    "Reply `approve` to run it, `reject: <reason>` to stop, or the plan as JSON to run an "
    "edited one."
)


def decision_of(text: str) -> dict[str, Any] | None:
    """The resume value a reply to an approval means; None for a reply that is none."""
    reply = text.strip()
    word = reply.lower().rstrip(".!")
    if word in ("approve", "approved", "yes", "ok"):
        return {"decision": "approve"}
    if word.startswith("reject"):
        reason = reply[len("reject") :].lstrip(" :-").strip()
        return {"decision": "reject", "reason": reason or None}
    try:
        plan = json.loads(reply)
    except ValueError:
        return None
    if isinstance(plan, dict) and "steps" in plan:
        return {"decision": "edit", "plan": plan}
    return None


async def start_turn(
    svc: Services,
    who: Principal,
    thread_id: str,
    question: str,
    *,
    options: RunOptions | None,
    spec: str | None,
) -> RunHandle | str:
    """Start the run a user message asks for: a new question, or the answer to the thread's
    approval; or return what to tell the user, when the thread waits for an approval and
    the message is no answer to it.

    Raises:
        ConfigError: the message has no text.
    """
    if not question.strip():
        raise ConfigError("the conversation has no user message with text")
    try:
        waiting = bool((await get_snapshot(svc.graph, thread_id)).interrupts)
        exists = True
    except ThreadNotFoundError:
        waiting, exists = False, False
    if exists:
        await guard(svc, who, thread_id, "runs")
    if waiting:
        decision = decision_of(question)
        if decision is None:
            return f"This conversation waits for the approval of a plan. {HOW_TO_ANSWER}"
        await guard(svc, who, thread_id, "approvals")
        return await svc.runs.start(
            RunOrder(thread_id=thread_id, decision={**decision, "by": who.label}), who
        )
    await claim(svc, who, thread_id)
    overrides = options.overrides() if options else {}
    if spec:
        overrides["model"] = spec
    order = RunOrder(
        thread_id=thread_id, request=question, options=overrides, new_thread=not exists
    )
    return await svc.runs.start(order, who)


def sources_of(citations: list[dict[str, Any]]) -> str:
    """The answer's trailing "Sources" section (empty without citations)."""
    if not citations:
        return ""
    lines = [f"[{i}] {c['source']}: {c['quote']}" for i, c in enumerate(citations, 1)]
    return "\n\nSources:\n" + "\n".join(lines)


def content_of(result: RunResult) -> str:
    """The assistant message for where the run stands."""
    if result.status == "interrupted" and result.pending_approval is not None:
        plan = result.pending_approval.get("plan") or {}
        steps = "\n".join(
            f"{i}. {s.get('instruction', '')}" for i, s in enumerate(plan.get("steps", []), 1)
        )
        return f"The plan waits for approval:\n{steps}\n\n{HOW_TO_ANSWER}"
    if result.status == "failed":
        return f"The run failed: {result.error or 'see the thread'}"
    return (result.answer or "") + sources_of(result.citations)


def tokens_of(result: RunResult | None) -> tuple[int, int]:
    """The run's input and output tokens, from its report."""
    report = (result.report if result else None) or {}
    return int(report.get("input_tokens", 0)), int(report.get("output_tokens", 0))


async def answer_deltas(handle: RunHandle) -> AsyncIterator[str]:
    """The answer's text as the run writes it: the synthesis, or the one step of a one-step
    plan (which answers the question itself). Ends when the run does."""
    answering: str | None = None
    while (event := await handle.queue.get()) is not None:
        kind = event["event"]
        if kind == "plan_update":
            steps = (event.get("plan") or {}).get("steps", [])
            answering = steps[0]["id"] if len(steps) == 1 else None
        elif kind == "delta" and (
            event.get("node") == "synthesize"
            or (answering is not None and event.get("step_id") == answering)
        ):
            yield str(event["text"])


def rest_of(content: str, streamed: str) -> str:
    """What to send after the streamed text for the whole content: the rest of it, or, if a
    replan changed the answer after it was streamed, the whole answer after a break."""
    return content[len(streamed) :] if content.startswith(streamed) else "\n\n" + content
