"""Helpers shared by the whole-run tests of the compiled graph (the test_graph_run_* modules)."""

from typing import Any

from graphs.agent import AgentGraph
from graphs.runs import RunEvent, thread_config

QUESTION = "What is the capital of France?"
TWO_PARTS = "What is the capital of France? What is the capital of Spain?"


def step(step_id: str, instruction: str, depends_on: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": step_id,
        "kind": "reasoning",
        "instruction": instruction,
        "depends_on": depends_on or [],
        "requires_approval": False,
    }


def names(events: list[RunEvent]) -> list[str]:
    return [e["event"] for e in events]


def only(events: list[RunEvent], name: str) -> list[RunEvent]:
    return [e for e in events if e["event"] == name]


def final(events: list[RunEvent]) -> RunEvent:
    finals = only(events, "final")
    assert len(finals) == 1, names(events)
    assert events[-1] is finals[0]
    return finals[0]


def step_results(events: list[RunEvent]) -> dict[str, dict[str, Any]]:
    return {e["result"]["step_id"]: e["result"] for e in only(events, "step_result")}


async def state_of(graph: AgentGraph, thread_id: str) -> dict[str, Any]:
    return (await graph.aget_state(thread_config(thread_id))).values
