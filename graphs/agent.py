"""Assemble the agent graph. `graph` (no checkpointer) is what `langgraph.json` serves."""

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import RetryPolicy

from app.artifacts import ArtifactStore
from app.errors import ModelError, RetrievalError
from app.tools.audit import AuditLog
from graphs.observe import observed
from nodes.approval import approve_final, plan_approval, route_answer, route_plan
from nodes.committee import committee_worker
from nodes.context import Context
from nodes.critic import criticize
from nodes.dispatch import dispatch, fan_out
from nodes.finalize import finalize
from nodes.orchestrator import orchestrator, route_request
from nodes.planner import planner
from nodes.rag import rag_worker
from nodes.reasoning import reasoning_worker, step_failed_handler
from nodes.state import InputState, OutputState, State
from nodes.supervisor import supervisor_worker
from nodes.synthesize import synthesize
from nodes.toolbox import Toolbox
from nodes.tools import tool_worker
from retrievers.service import Library

DEFAULT_STEP_TIMEOUT_S = 120.0
DEFAULT_STEP_ATTEMPTS = 3
MODEL_NODE_TIMEOUT_S = 600.0

AgentGraph = CompiledStateGraph[State, Context, InputState, OutputState]


def _retry_step(exc: Exception) -> bool:
    # A step is retried on any failure but a model that cannot be loaded at all, or a
    # collection that cannot be used as asked (unknown, or another embedding dimension).
    return not isinstance(exc, ModelError | RetrievalError)


def build_graph(
    *,
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
    step_attempts: int = DEFAULT_STEP_ATTEMPTS,
    library: Library | None = None,
    audit: AuditLog | None = None,
    toolbox: Toolbox | None = None,
    artifacts: ArtifactStore | None = None,
) -> StateGraph[State, Context, InputState, OutputState]:
    """Return the uncompiled graph; step retries and the per-attempt timeout are node policies,
    and every node is observed (a span and metrics per execution: `graphs.observe`).

    `library` is where rag steps search and which collections the planner matches steps
    against; without one, only a run that names a collection answers from documents (in
    the settings' database). `audit` records every call of a tool step (none is recorded
    without one). `toolbox` holds the manifest's agents and tools; without one, the settings'
    manifest applies, without its MCP servers. `artifacts` keeps what tool and rag steps
    produce (`nodes.artifacts`; nothing is kept without one).
    """
    builder = StateGraph(
        State, context_schema=Context, input_schema=InputState, output_schema=OutputState
    )
    model_retry = RetryPolicy(max_attempts=2)
    builder.add_node("orchestrator", observed("orchestrator", orchestrator(library, toolbox)))
    builder.add_node(
        "planner",
        observed("planner", planner(library, toolbox)),
        retry_policy=model_retry,
        timeout=MODEL_NODE_TIMEOUT_S,
    )
    builder.add_node("approve_plan", observed("approve_plan", plan_approval(toolbox)))
    builder.add_node("dispatch", observed("dispatch", dispatch))
    step_retry = RetryPolicy(
        max_attempts=step_attempts, initial_interval=0.2, max_interval=5.0, retry_on=_retry_step
    )
    # Workers: one per step kind (and the committee, which answers reasoning steps of the
    # committee pattern), each retried and timed out per attempt; a step that still
    # fails becomes a failed result through its error handler.
    workers = (
        ("reasoning", reasoning_worker(toolbox)),
        ("rag", rag_worker(library, artifacts=artifacts)),
        ("tool", tool_worker(toolbox, audit=audit, artifacts=artifacts)),
        ("committee", committee_worker(toolbox)),
        ("supervisor", supervisor_worker(toolbox)),
    )
    for kind, worker in workers:
        builder.add_node(
            kind,
            observed(kind, worker),
            retry_policy=step_retry,
            timeout=step_timeout_s,
            error_handler=step_failed_handler(step_attempts, node=kind),
        )
    builder.add_node("critic", observed("critic", criticize))
    builder.add_node(
        "synthesize",
        observed("synthesize", synthesize),
        retry_policy=model_retry,
        timeout=MODEL_NODE_TIMEOUT_S,
    )
    builder.add_node("approve_final", observed("approve_final", approve_final))
    builder.add_node("finalize", observed("finalize", finalize))

    builder.add_edge(START, "orchestrator")
    builder.add_conditional_edges("orchestrator", route_request)
    builder.add_conditional_edges("planner", route_plan)
    builder.add_conditional_edges(
        "dispatch", fan_out, ["reasoning", "rag", "tool", "committee", "supervisor", "critic"]
    )
    for kind, _ in workers:
        builder.add_edge(kind, "dispatch")
    builder.add_conditional_edges("synthesize", route_answer)
    builder.add_edge("finalize", END)
    return builder


def compile_graph(
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    *,
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
    step_attempts: int = DEFAULT_STEP_ATTEMPTS,
    library: Library | None = None,
    audit: AuditLog | None = None,
    toolbox: Toolbox | None = None,
    artifacts: ArtifactStore | None = None,
) -> AgentGraph:
    """Compile the graph with a checkpointer (the Postgres saver in production)."""
    builder = build_graph(
        step_timeout_s=step_timeout_s,
        step_attempts=step_attempts,
        library=library,
        audit=audit,
        toolbox=toolbox,
        artifacts=artifacts,
    )
    return builder.compile(checkpointer=checkpointer, name="agentgraph")


graph = compile_graph(library=Library())
"""The graph without a checkpointer: `langgraph dev` and LangGraph Platform supply their own.
Its steps answer from the collections in the settings' database (embedded or `DATABASE_URL`)."""
