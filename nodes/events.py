"""Custom stream events. Each carries only what is new, never the whole state again."""

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
]
EVENT_NAMES: tuple[EventName, ...] = get_args(EventName)


def emit(writer: StreamWriter, event: EventName, **data: Any) -> None:
    """Write one event to the custom stream (a no-op when nobody streams it)."""
    writer({"event": event, **data})
