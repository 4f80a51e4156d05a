"""Independent steps run at the same time."""

import time

from graphs.agent import AgentGraph
from graphs.runs import thread_config
from nodes.context import Context
from tests.fakes import MakeModel

from .conftest import CollectEvents


async def test_independent_steps_overlap(
    graph: AgentGraph, thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    spec, model = make_model(delay_s=1.0, reply="An answer.")
    context = Context(model=spec, approval="never", mode="plan")

    started = time.monotonic()
    events = await collect_events(
        graph, thread_id=thread_id, context=context, request="What is A? What is B?"
    )
    elapsed = time.monotonic() - started

    assert events[-1]["event"] == "final"
    state = (await graph.aget_state(thread_config(thread_id))).values
    assert [s["depends_on"] for s in state["plan"]["steps"]] == [[], []]
    reasoning = [u for u in state["usage"] if u["node"] == "reasoning"]
    assert sorted(u["step_id"] for u in reasoning) == ["s1", "s2"]
    first, second = reasoning
    # Each step sleeps 1 s inside the model; run one after the other they could not overlap.
    assert max(first["started_at"], second["started_at"]) < min(
        first["ended_at"], second["ended_at"]
    )
    assert model.calls == 3  # two steps and the synthesis
    # A loose bound only (about 2 s expected); the overlap above is what shows parallelism.
    assert elapsed < 3.5
