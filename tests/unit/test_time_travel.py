"""History and forks of a thread on the in-memory checkpointer."""

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.errors import ThreadNotFoundError
from graphs.agent import AgentGraph
from graphs.runs import thread_config
from graphs.threads import fork, history, view_thread
from nodes.context import Context
from tests.fakes import MakeModel

from .conftest import CollectEvents

QUESTION = "What is the capital of France?"
ONE_STEP = {
    "goal": QUESTION,
    "steps": [
        {
            "id": "only",
            "kind": "reasoning",
            "instruction": "Answer briefly.",
            "depends_on": [],
            "requires_approval": False,
        },
    ],
}

Fork = Callable[[AgentGraph, str, str, dict[str, Any]], Awaitable[str]]


async def fork_with_runs(
    graph: AgentGraph, thread_id: str, checkpoint_id: str, values: dict[str, Any]
) -> str:
    return await fork(graph, thread_id, checkpoint_id, values, as_node="planner")


async def fork_from_snapshot(
    graph: AgentGraph, thread_id: str, checkpoint_id: str, values: dict[str, Any]
) -> str:
    # The same fork through LangGraph's own API, from the config the saver handed out.
    async for snap in graph.aget_state_history(thread_config(thread_id)):
        if snap.config["configurable"]["checkpoint_id"] == checkpoint_id:
            config = await graph.aupdate_state(snap.config, values, as_node="planner")
            return str(config["configurable"]["checkpoint_id"])
    raise AssertionError(f"no checkpoint {checkpoint_id}")


@pytest.mark.parametrize(
    "fork_at",
    [
        pytest.param(
            fork_with_runs,
            id="runs.fork",
        ),
        pytest.param(fork_from_snapshot, id="snapshot-config"),
    ],
)
async def test_fork_finishes_a_new_branch_and_keeps_the_old_one(
    graph: AgentGraph,
    thread_id: str,
    make_model: MakeModel,
    collect_events: CollectEvents,
    fork_at: Fork,
) -> None:
    spec, _ = make_model(reply="answer {n}")
    context = Context(model=spec, approval="never", mode="plan")
    await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)
    before = await view_thread(graph, thread_id)
    assert before["answer"] == "answer 2"  # s1, then s2, whose answer is the final one
    old_final_id = before["checkpoint_id"]
    assert old_final_id is not None

    checkpoints = await history(graph, thread_id)
    assert checkpoints[0]["checkpoint_id"] == old_final_id  # newest first
    assert checkpoints[0]["next"] == []
    # The oldest checkpoint bound for dispatch is the one right after the planner.
    planned = [c for c in checkpoints if c["next"] == ["dispatch"]][-1]

    fork_id = await fork_at(graph, thread_id, planned["checkpoint_id"], {"plan": ONE_STEP})
    await graph.ainvoke(None, thread_config(thread_id), context=context)

    after = await view_thread(graph, thread_id)
    assert after["status"] == "done"
    assert after["answer"] == "answer 3"
    assert after["plan"] == ONE_STEP
    # history lists every checkpoint of the thread; follow parents for the new branch.
    everything = {c["checkpoint_id"]: c for c in await history(graph, thread_id)}
    assert everything[fork_id]["parent_id"] == planned["checkpoint_id"]
    lineage = []
    current: str | None = after["checkpoint_id"]
    while current is not None:
        lineage.append(current)
        current = everything[current]["parent_id"]
    assert fork_id in lineage
    assert planned["checkpoint_id"] in lineage
    assert old_final_id not in lineage
    assert old_final_id in everything  # the old branch is still stored
    state = (await graph.aget_state(thread_config(thread_id))).values
    assert set(state["results"]) == {"only"}

    old = await graph.aget_state(thread_config(thread_id, old_final_id))
    assert old.values["answer"] == "answer 2"
    assert set(old.values["results"]) == {"s1", "s2"}
    assert old.values["report"]["status"] == "done"


async def test_history_of_an_unknown_thread(graph: AgentGraph) -> None:
    with pytest.raises(ThreadNotFoundError) as info:
        await history(graph, "unit-no-such-thread")
    assert info.value.thread_id == "unit-no-such-thread"


async def test_view_of_an_unknown_thread(graph: AgentGraph) -> None:
    with pytest.raises(ThreadNotFoundError):
        await view_thread(graph, "unit-no-such-thread")
