"""The committee worker: several agents answer one reasoning step in parallel, each with its
own model and prompt from the manifest, and a judge (the run's model) picks the best answer.
Every member's answer and the judge's choice are kept in the step result (`votes`,
`judgement`); the chosen answer is the step's output.

Members' tokens stream nowhere (their deltas would interleave): the chosen answer is emitted
as the step's delta once it is known.
"""

import asyncio
import logging
import time

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from app.accounting import Tokens
from nodes.context import Context
from nodes.llm import Generation, generate, generate_structured, model_config
from nodes.prompts import JUDGE_PROMPT, SYSTEM_PROMPT
from nodes.reasoning import WorkerUpdate, answered_step, step_messages
from nodes.schemas import Judgement, Vote
from nodes.state import Node, WorkerInput
from nodes.toolbox import Toolbox, toolbox_or_settings

logger = logging.getLogger(__name__)


def committee_worker(toolbox: Toolbox | None = None) -> Node[WorkerInput, WorkerUpdate]:
    """Return the committee worker over `toolbox`'s agents (the settings' manifest's by
    default)."""

    async def answer_by_committee(state: WorkerInput, runtime: Runtime[Context]) -> WorkerUpdate:
        """Run one committee step and return its result."""
        return await _committee(state, runtime, await toolbox_or_settings(toolbox))

    return answer_by_committee


async def _member(
    payload: WorkerInput, context: Context, box: Toolbox, agent: str
) -> tuple[Vote, Generation]:
    route = box.route_of(agent, context, "reasoning")
    messages = step_messages(payload)
    messages[0] = SystemMessage(box.prompt_of(agent, SYSTEM_PROMPT))
    try:
        generation = await generate(
            messages,
            model=route.primary,
            fallbacks=route.fallbacks,
            writer=_quiet,
            node="committee",
            step_id=payload["step"]["id"],
            max_tokens=context.max_output_tokens,
        )
    except Exception as exc:  # whatever sank one member, the others may answer
        logger.warning("committee member %s failed: %s", agent, exc)
        generation = Generation(text="", model=route.primary, tokens=Tokens(), cost=0.0)
    answer = generation.text.strip()
    vote = Vote(
        agent=agent,
        model=generation.model,
        answer=answer,
        status="done" if answer else "failed",
        chosen=False,
    )
    return vote, generation


async def _judge(
    payload: WorkerInput, context: Context, candidates: list[Vote]
) -> tuple[Judgement, Generation]:
    listed = "\n\n".join(f"Answer {i}:\n{v['answer']}" for i, v in enumerate(candidates, 1))
    schema = {
        "type": "object",
        "properties": {
            "best": {"type": "integer", "minimum": 1, "maximum": len(candidates)},
            "reason": {"type": "string"},
        },
        "required": ["best", "reason"],
    }
    prompt = JUDGE_PROMPT.format(instruction=payload["step"]["instruction"], answers=listed)
    route = context.route("critic")
    parsed, generation = await generate_structured(
        [SystemMessage("You judge answers and reply in JSON."), HumanMessage(prompt)],
        schema,
        model=route.primary,
        fallbacks=route.fallbacks,
        config=model_config("committee", payload["step"]["id"]),
    )
    best = parsed.get("best") if isinstance(parsed, dict) else None
    if not isinstance(best, int) or not 1 <= best <= len(candidates):
        return Judgement(
            model=generation.model,
            chosen=candidates[0]["agent"],
            reason=f"the judge gave no valid choice ({best!r}): the first answer is kept",
        ), generation
    reason = str(parsed.get("reason") or "").strip() if isinstance(parsed, dict) else ""
    return Judgement(
        model=generation.model, chosen=candidates[best - 1]["agent"], reason=reason
    ), generation


async def _committee(payload: WorkerInput, runtime: Runtime[Context], box: Toolbox) -> WorkerUpdate:
    started = time.time()
    step = payload["step"]
    context = runtime.context
    members = step.get("members") or [a.name for a in box.manifest.agents]
    answered = await asyncio.gather(*(_member(payload, context, box, a) for a in members))
    votes = [vote for vote, _ in answered]
    spent = [generation for _, generation in answered]
    candidates = [v for v in votes if v["status"] == "done"]
    judgement: Judgement | None = None
    if len(candidates) == 1:
        judgement = Judgement(
            model="", chosen=candidates[0]["agent"], reason="the only member that answered"
        )
    elif candidates:
        try:
            judgement, judged = await _judge(payload, context, candidates)
            spent.append(judged)
        except Exception as exc:  # a judge that fails leaves the answers
            judgement = Judgement(
                model=context.route("critic").primary,
                chosen=candidates[0]["agent"],
                reason=f"the judge failed ({exc}): the first answer is kept",
            )
    output = ""
    for vote in votes:
        vote["chosen"] = judgement is not None and vote["agent"] == judgement["chosen"]
        if vote["chosen"]:
            output = vote["answer"]
    tokens = sum((g.tokens for g in spent), Tokens())
    cost = sum(g.cost for g in spent)
    fallbacks = tuple(f for g in spent for f in g.fallbacks)
    return answered_step(
        runtime,
        step,
        node="committee",
        started=started,
        generation=Generation(
            text=output, model=context.model, tokens=tokens, cost=cost, fallbacks=fallbacks
        ),
        error="no member of the committee answered",
        votes=votes,
        fallbacks=list(fallbacks),
        **({"judgement": judgement} if judgement is not None else {}),
    )


def _quiet(_: object) -> None:
    """A stream writer that drops what it is given."""
