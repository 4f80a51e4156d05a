"""Custom stream events. Each carries only what is new, never the whole state again.

A node's events go to the run's event sink when whoever runs the graph set one
(`graphs.runs.run_events`: the CLI, the server, notebooks), and otherwise to LangGraph's
`custom` stream (`langgraph dev`, Studio, a direct `graph.astream(stream_mode="custom")`).
The sink is the cheaper road: LangGraph hands every custom event to its stream through the
event loop's thread-safe queue, and streaming `custom` at all makes it run each task of a
super-step as a task of its own.
"""

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Literal, get_args

from langgraph.types import StreamWriter

EventName = Literal[
    "plan_update",
    "handoff",
    "delta",
    "step_result",
    "interrupt",
    "final",
    "error",
    "retrieval",
    "citations",
    "fallback",
]
EVENT_NAMES: tuple[EventName, ...] = get_args(EventName)

EventSink = Callable[[dict[str, Any]], None]
"""Takes one event, in the event loop's thread."""

event_sink: ContextVar[EventSink | None] = ContextVar("event_sink", default=None)
"""Where this run's events go instead of the custom stream; the graph's tasks inherit it."""


def emit(writer: StreamWriter, event: EventName, **data: Any) -> None:
    """Send one event to the run's sink, else to the custom stream (a no-op when nobody
    streams it)."""
    (event_sink.get() or writer)({"event": event, **data})
