"""Where a run's events go: the run's sink when one is set, else LangGraph's custom stream."""

import asyncio
import threading
from typing import Any, cast

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.agent import AgentGraph
from graphs.runs import RunEvent, run_events, stream_events, thread_config
from nodes.context import Context
from nodes.events import emit
from nodes.state import InputState
from tests.fakes import MakeModel

TWO_PARTS = "What is the capital of France? What is the capital of Spain?"


class TinyState(TypedDict):
    request: str


def one_node_graph(node: Any) -> AgentGraph:
    """A graph of `node` alone, run by the same run API as the agent."""
    builder = StateGraph(TinyState, context_schema=Context)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    return cast(AgentGraph, builder.compile(checkpointer=InMemorySaver()))


async def test_without_a_sink_the_nodes_events_reach_the_custom_stream(
    graph: AgentGraph, make_model: MakeModel
) -> None:
    """`langgraph dev`, Studio and a direct `astream` read the events from LangGraph."""
    spec, _ = make_model(reply="Paris.")
    context = Context(model=spec, approval="never", mode="plan")

    through_sink: list[RunEvent] = []
    await run_events(
        graph, sink=through_sink.append, thread_id="sink", context=context, request=TWO_PARTS
    )
    streamed = [
        chunk
        async for chunk in graph.astream(
            InputState(request=TWO_PARTS),
            thread_config("custom"),
            context=context,
            stream_mode="custom",
        )
    ]

    assert [e["event"] for e in streamed] == [e["event"] for e in through_sink]
    assert through_sink[-1]["event"] == "final"
    assert through_sink[-1]["status"] == "done"


async def test_an_event_from_a_worker_thread_reaches_the_sink_in_the_loop_thread() -> None:
    def sync_node(state: TinyState, runtime: Runtime[Context]) -> dict[str, Any]:
        # LangGraph runs a synchronous node in a worker thread.
        emit(runtime.stream_writer, "handoff", thread=threading.get_ident())
        emit(runtime.stream_writer, "final", status="done")
        return {}

    tiny = one_node_graph(sync_node)
    received: list[tuple[str, int]] = []
    events: list[RunEvent] = []

    def sink(event: RunEvent) -> None:
        received.append((event["event"], threading.get_ident()))
        events.append(event)

    await run_events(tiny, sink=sink, thread_id="tiny", context=Context(), request="hello")

    loop_thread = threading.get_ident()
    assert received == [("handoff", loop_thread), ("final", loop_thread)]
    assert events[0]["thread"] != loop_thread


async def test_leaving_stream_events_early_stops_the_run() -> None:
    stopped = asyncio.Event()

    async def slow_node(state: TinyState, runtime: Runtime[Context]) -> dict[str, Any]:
        emit(runtime.stream_writer, "handoff", source="slow_node")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise
        return {}

    tiny = one_node_graph(slow_node)

    events = stream_events(tiny, thread_id="tiny", context=Context(), request="hello")
    first = await anext(events)
    closing = asyncio.create_task(events.aclose())
    await asyncio.wait([closing], timeout=5)
    closing.cancel()

    assert first["event"] == "handoff"
    assert stopped.is_set()
