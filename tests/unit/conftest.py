"""Unit-test fixtures: an in-memory graph, thread ids, and the scripted fake chat model."""

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs.agent import AgentGraph, compile_graph
from graphs.runs import RunEvent, stream_events
from nodes.context import Context

# The whole-run helpers assert too; rewrite them so a failure shows its values, as in a test.
pytest.register_assert_rewrite("tests.unit.graph_helpers")


@pytest.fixture
def graph() -> AgentGraph:
    """A compiled graph on its own in-memory checkpointer."""
    return compile_graph(InMemorySaver())


@pytest.fixture
def thread_id() -> str:
    """A fresh thread id."""
    return f"unit-{uuid.uuid4().hex}"


async def _collect_events(
    graph: AgentGraph,
    *,
    thread_id: str,
    context: Context,
    request: str | None = None,
    resume: dict[str, Any] | None = None,
) -> list[RunEvent]:
    return [
        event
        async for event in stream_events(
            graph,
            thread_id=thread_id,
            context=context,
            request=request,
            resume=resume,  # type: ignore[arg-type]
        )
    ]


CollectEvents = Callable[..., Awaitable[list[RunEvent]]]


@pytest.fixture
def collect_events() -> CollectEvents:
    """Return a coroutine function that runs or resumes a thread and lists its events."""
    return _collect_events
