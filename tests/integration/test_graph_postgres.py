"""The graph in process over the real Postgres saver: embedded PostgreSQL 18 and the
machine's PostgreSQL 15. The chat model is the real local one, except where a test needs a
latency or a malformed plan that only a remote model would produce (then a scripted fake)."""

import time
import uuid
from typing import Any

import psycopg

from app.settings import Settings
from graphs.driver import continue_check
from graphs.retention import discard_since
from graphs.runs import RunEvent, stream_events, thread_config
from graphs.service import Agent, open_agent
from graphs.threads import fork, history, run_state, view_thread
from nodes.context import Context
from tests.fakes import MakeModel

LOCAL = Context(model="local", approval="never", max_output_tokens=48)


async def run(agent: Agent, thread_id: str, context: Context, **kwargs: Any) -> list[RunEvent]:
    return [
        e async for e in stream_events(agent.graph, thread_id=thread_id, context=context, **kwargs)
    ]


async def test_independent_steps_run_in_parallel(
    agent: Agent, thread_id: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="An answer after a second.", delay_s=1.0)
    context = Context(model=spec, approval="never", mode="plan")
    started = time.monotonic()
    events = await run(agent, thread_id, context, request="What is A? What is B?")
    elapsed = time.monotonic() - started

    results = [e["result"] for e in events if e["event"] == "step_result"]
    assert [r["status"] for r in results] == ["done", "done"]
    view = await view_thread(agent.graph, thread_id)
    spans = [
        r
        for r in (await agent.graph.aget_state(thread_config(thread_id))).values["usage"]
        if r["node"] == "reasoning"
    ]
    assert len(spans) == 2
    # Each step took a second; run one after the other they could not overlap.
    overlap = min(s["ended_at"] for s in spans) - max(s["started_at"] for s in spans)
    assert overlap > 0.8
    # Two 1 s steps plus a 1 s synthesis: well under the 3 s a sequential run needs.
    assert elapsed < 2.8, f"took {elapsed:.2f} s"
    assert view["status"] == "done"


async def test_invalid_llm_plan_falls_back_to_the_rules(
    agent: Agent, thread_id: str, make_model: MakeModel
) -> None:
    cyclic = {
        "goal": "x",
        "steps": [
            {
                "id": "a",
                "kind": "reasoning",
                "instruction": "a",
                "depends_on": ["b"],
                "requires_approval": False,
            },
            {
                "id": "b",
                "kind": "reasoning",
                "instruction": "b",
                "depends_on": ["a"],
                "requires_approval": False,
            },
        ],
    }
    spec, _ = make_model(structured=cyclic)
    context = Context(model=spec, approval="never", planner="llm")
    await run(agent, thread_id, context, request="What is A? What is B?")

    view = await view_thread(agent.graph, thread_id)
    first = view["plan_history"][0]
    assert first["source"] == "rules"
    assert first["fallback_reason"] is not None
    assert "cycle" in first["fallback_reason"] or "entry step" in first["fallback_reason"]
    assert [s["id"] for s in view["plan"]["steps"]] == ["s1", "s2"]
    assert view["report"] is not None
    assert view["report"]["fallback_reasons"] == [first["fallback_reason"]]
    assert view["status"] == "done"


async def test_llm_planner_on_the_local_model_gives_a_valid_plan(
    agent: Agent, thread_id: str
) -> None:
    context = Context(model="local", approval="never", planner="llm", max_output_tokens=48)
    await run(agent, thread_id, context, request="Compare cats and dogs as pets.")

    view = await view_thread(agent.graph, thread_id)
    first = view["plan_history"][0]
    # Whatever the small model wrote, the plan that ran is valid: its own, or the rules'.
    if first["source"] == "llm":
        assert first["fallback_reason"] is None
    else:
        assert first["fallback_reason"].startswith("LLM plan rejected")
    assert view["status"] == "done"
    assert view["report"]["nodes"]["planner"]["calls"] == 1


async def test_fork_an_earlier_checkpoint_and_finish_the_new_branch(
    agent: Agent, thread_id: str
) -> None:
    await run(agent, thread_id, LOCAL, request="What is the capital of France?")
    old = await view_thread(agent.graph, thread_id)
    assert old["status"] == "done"
    old_final = old["checkpoint_id"]

    checkpoints = await history(agent.graph, thread_id)
    before_dispatch = [c for c in checkpoints if c["next"] == ["dispatch"]][-1]
    new_plan = {
        "goal": "What is the capital of Italy?",
        "steps": [
            {
                "id": "italy",
                "kind": "reasoning",
                "instruction": "What is the capital of Italy?",
                "depends_on": [],
                "requires_approval": False,
            }
        ],
    }
    fork_id = await fork(
        agent.graph,
        thread_id,
        before_dispatch["checkpoint_id"],
        {"plan": new_plan},
        as_node="orchestrator",
    )
    async for _ in agent.graph.astream(None, thread_config(thread_id), context=LOCAL):
        pass

    new = await view_thread(agent.graph, thread_id)
    assert new["status"] == "done"
    assert new["plan"] == new_plan
    assert [s["step_id"] for s in new["report"]["steps"]] == ["italy"]
    assert new["checkpoint_id"] != old_final
    # The old branch is intact and still readable at its own checkpoint.
    old_again = await agent.graph.aget_state(thread_config(thread_id, old_final))
    assert old_again.values["answer"] == old["answer"]
    assert set(old_again.values["results"]) == {"answer"}
    ids = {c["checkpoint_id"]: c for c in await history(agent.graph, thread_id)}
    assert ids[fork_id]["parent_id"] == before_dispatch["checkpoint_id"]


async def test_a_run_stopped_after_its_steps_wrote_and_before_their_checkpoint_continues(
    agent: Agent, thread_id: str, make_model: MakeModel
) -> None:
    """Every task of a super-step wrote its result, then the run stopped before the step's
    checkpoint (a crash, or a client that left, at that moment): LangGraph's `next` is then
    empty, yet the run is not over. The thread reads as cut off, and a continue applies the
    results (no step runs again) and finishes."""
    spec, model = make_model(reply="Answer {n}.")
    context = Context(model=spec, approval="never", mode="plan")
    await run(agent, thread_id, context, request="What is A? What is B?")
    checkpoints = await history(agent.graph, thread_id)  # newest first
    [before] = [i for i, c in enumerate(checkpoints) if c["next"] == ["reasoning"] * 2]
    await discard_since(agent.db.pool, thread_id, checkpoints[before - 1]["created_at"])
    snapshot = await agent.graph.aget_state(thread_config(thread_id))
    assert (snapshot.next, [t.name for t in snapshot.tasks]) == ((), ["reasoning"] * 2)

    view = await view_thread(agent.graph, thread_id)
    assert run_state(view, running=False) == ("running", True)
    await continue_check(agent.graph, thread_id)
    calls = model.calls
    events = await run(agent, thread_id, context, proceed=True)

    assert events[-1]["event"] == "final", events[-1]
    assert events[-1]["status"] == "done"
    assert model.calls == calls + 1  # the synthesis only: no step ran again
    done = await view_thread(agent.graph, thread_id)
    assert (done["status"], sorted(done["report"]["steps"][i]["status"] for i in (0, 1))) == (
        "done",
        ["done", "done"],
    )


async def test_full_run_on_postgres_15(settings: Settings, pg15_url: str) -> None:
    thread_id = f"pg15-{uuid.uuid4().hex}"
    async with open_agent(settings, url=pg15_url) as agent:
        events = await run(agent, thread_id, LOCAL, request="What is the capital of France?")
        view = await view_thread(agent.graph, thread_id)

    assert [e["event"] for e in events][-1] == "final"
    assert view["status"] == "done"
    assert view["answer"]
    assert view["report"]["total_tokens"] > 0
    with psycopg.connect(pg15_url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        stored = conn.execute(
            "SELECT count(*) FROM checkpoints WHERE thread_id = %s", (thread_id,)
        ).fetchone()
    assert version is not None
    assert int(version[0]) // 10000 == 15
    assert stored is not None
    assert stored[0] > 3
