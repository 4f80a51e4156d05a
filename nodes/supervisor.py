"""The supervisor worker: a supervisor agent hands a reasoning step's sub-tasks to the
manifest's worker agents until it answers, built with `langgraph-supervisor`: the supervisor
is its tool-calling agent, each handoff a `transfer_to_<agent>` tool call, each worker a small
graph that answers with the agent's own model and prompt.

The supervisor graph runs inside the step, without a checkpointer of its own: a step is
retried as a whole, like any other. Its rounds (which agent was asked, what it answered) are
kept in the step result (`rounds`); the step's answer is the supervisor's last message, or the
last worker's answer when the supervisor ends without one.
"""

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphRecursionError
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import StreamWriter
from langgraph_supervisor import create_supervisor

from app.accounting import Tokens, cost_of
from app.model_routes import ModelFallback, Route
from nodes.context import Context
from nodes.llm import Generation, RoutedChatModel, invoke, model_config
from nodes.prompts import SUPERVISOR_PROMPT, SYSTEM_PROMPT
from nodes.reasoning import WorkerUpdate, answered_step, step_messages
from nodes.schemas import Round
from nodes.state import Node, WorkerInput
from nodes.toolbox import Toolbox, toolbox_or_settings

SUPERVISOR_NAME = "supervisor"
logger = logging.getLogger(__name__)


@dataclass
class _Fallen:
    """Where the workers of one step announce their model fallbacks, and keep them."""

    writer: StreamWriter
    fallbacks: list[ModelFallback] = field(default_factory=list)


def supervisor_worker(toolbox: Toolbox | None = None) -> Node[WorkerInput, WorkerUpdate]:
    """Return the supervisor worker over `toolbox`'s agents (the settings' manifest's by
    default): the step's first member supervises, the others work."""

    async def answer_by_supervisor(state: WorkerInput, runtime: Runtime[Context]) -> WorkerUpdate:
        """Run one supervised step and return its result."""
        return await _supervise(state, runtime, await toolbox_or_settings(toolbox))

    return answer_by_supervisor


def _worker_graph(
    box: Toolbox, agent: str, context: Context, step_id: str, fallen: _Fallen
) -> CompiledStateGraph[Any]:
    route = box.route_of(agent, context)
    system = box.prompt_of(agent, SYSTEM_PROMPT)

    async def work(state: MessagesState) -> dict[str, list[BaseMessage]]:
        task = next(m for m in state["messages"] if isinstance(m, HumanMessage))
        earlier = [
            f"{m.name}: {m.text}"
            for m in state["messages"]
            if isinstance(m, AIMessage) and m.name not in (None, SUPERVISOR_NAME) and m.text
        ]
        prompt = task.text + (
            "\nWhat the others answered:\n" + "\n".join(earlier) if earlier else ""
        )
        reply, generation = await invoke(
            [SystemMessage(system), HumanMessage(prompt)],
            chain=[route.primary, *route.fallbacks],
            bind=lambda chat: chat,
            writer=fallen.writer,
            node="supervisor",
            step_id=step_id,
            max_tokens=context.max_output_tokens,
        )
        fallen.fallbacks.extend(
            {**f, "answered_by": generation.model} for f in generation.fallbacks
        )
        return {
            "messages": [
                AIMessage(
                    content=reply.text,
                    name=agent,
                    usage_metadata=getattr(reply, "usage_metadata", None),
                    response_metadata={"model": generation.model},
                )
            ]
        }

    builder = StateGraph(MessagesState)
    builder.add_node("work", work)
    builder.add_edge(START, "work")
    return builder.compile(name=agent, checkpointer=False)


def _team(
    box: Toolbox,
    route: Route,
    workers: list[str],
    context: Context,
    step_id: str,
    fallen: _Fallen,
) -> CompiledStateGraph[Any]:
    listed = []
    for worker in workers:
        entry = box.manifest.agent(worker)
        listed.append(f"- {worker}: {entry.description if entry else worker}")
    return create_supervisor(
        [_worker_graph(box, w, context, step_id, fallen) for w in workers],
        model=RoutedChatModel(
            chain=[route.primary, *route.fallbacks],
            writer=fallen.writer,
            node="supervisor",
            step_id=step_id,
            max_tokens=context.max_output_tokens,
            fallbacks=fallen.fallbacks,
        ),
        prompt=SUPERVISOR_PROMPT.format(agents="\n".join(listed)),
        supervisor_name=SUPERVISOR_NAME,
        output_mode="full_history",
        add_handoff_back_messages=False,
    ).compile(checkpointer=False)


async def _supervise(payload: WorkerInput, runtime: Runtime[Context], box: Toolbox) -> WorkerUpdate:
    started = time.time()
    step = payload["step"]
    context = runtime.context
    members = step.get("members") or [a.name for a in box.manifest.agents]
    boss, workers = members[0], members[1:]
    route = box.route_of(boss, context)
    boss_model = route.primary
    with warnings.catch_warnings():  # its own use of create_react_agent, deprecated in 1.0
        warnings.filterwarnings("ignore", message="create_react_agent has been moved")
        fallen = _Fallen(runtime.stream_writer)
        team = _team(box, route, workers, context, step["id"], fallen)
    task = step_messages(payload)[1]
    # A handoff is two steps of the supervisor graph (the supervisor, then the worker).
    config: RunnableConfig = {
        **model_config("supervisor", step["id"]),
        "recursion_limit": 2 * context.max_tool_calls + 1,
    }
    messages: list[BaseMessage] = [task]
    try:
        async for values in team.astream({"messages": [task]}, config, stream_mode="values"):
            messages = values["messages"]
    except GraphRecursionError:  # a supervisor that keeps handing off: end with what it has
        logger.info("step %s: the supervisor reached its handoff limit", step["id"])
    rounds = [
        Round(agent=m.name or "", answer=m.text)
        for m in messages
        if isinstance(m, AIMessage) and m.name in workers
    ]
    last = next(
        (
            m
            for m in reversed(messages)
            if isinstance(m, AIMessage)
            and m.name == SUPERVISOR_NAME
            and m.text
            and not m.tool_calls
        ),
        None,
    )
    output = last.text.strip() if last else (rounds[-1]["answer"].strip() if rounds else "")
    tokens = Tokens()
    cost = 0.0
    for m in messages:
        usage = getattr(m, "usage_metadata", None)
        if isinstance(m, AIMessage) and usage:
            spent = Tokens(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
            tokens = tokens + spent
            cost += cost_of(str(m.response_metadata.get("model", boss_model)), spent)
    return answered_step(
        runtime,
        step,
        node="supervisor",
        started=started,
        generation=Generation(
            text=output,
            model=boss_model,
            tokens=tokens,
            cost=cost,
            fallbacks=tuple(fallen.fallbacks),
        ),
        error="the supervisor and its workers gave no answer",
        rounds=rounds,
    )
