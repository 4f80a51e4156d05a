"""LangServe at /agent through `langserve.RemoteRunnable`: thread ids and run options in
`config.configurable`, an approval interrupt in the stream, a resume, the final answer."""

import uuid
from typing import Any

import httpx
from langchain_core.runnables import RunnableConfig
from langserve import RemoteRunnable

from tests.fakes import MakeModel
from tests.integration.server_harness import RunningServer

QUESTION = "What is A? What is B?"


def _config(thread_id: str, **options: Any) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, **options}}


async def test_stream_shows_the_interrupt_and_a_resume_finishes(
    api: RunningServer, remote_agent: RemoteRunnable[Any, Any], make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Remote answer.")
    agent = remote_agent
    thread_id = f"remote-{uuid.uuid4().hex}"
    config = _config(thread_id, model=spec, approval="always")

    events = [e async for e in agent.astream({"question": QUESTION}, config=config)]
    names = [e["event"] for e in events]
    assert names[0] == "metadata"
    assert events[0]["thread_id"] == thread_id  # the thread id reached the graph
    assert names[-1] == "interrupt"
    assert events[-1]["payload"]["gate"] == "plan"

    final = await agent.ainvoke({"resume": {"decision": "approve"}}, config=config)
    assert final["event"] == "final"
    assert final["thread_id"] == thread_id
    assert "Remote answer." in final["answer"]

    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
    assert thread["status"] == "done"
    assert [a["decision"] for a in thread["report"]["approvals"]] == ["approve"]


async def test_invoke_and_astream_events_with_a_thread_id(
    api: RunningServer, remote_agent: RemoteRunnable[Any, Any], make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Invoked answer.")
    agent = remote_agent
    thread_id = f"remote-{uuid.uuid4().hex}"
    result = await agent.ainvoke(
        {"question": "What is A?"}, config=_config(thread_id, model=spec, approval="never")
    )
    assert result["event"] == "final"
    assert result["thread_id"] == thread_id
    assert "Invoked answer." in result["answer"]

    events_thread = f"remote-{uuid.uuid4().hex}"
    streamed: list[dict[str, Any]] = []
    async for event in agent.astream_events(
        {"question": QUESTION},
        config=_config(events_thread, model=spec, approval="always"),
        version="v2",
    ):
        # The root runnable streams the run's events; the graph's own events come nested.
        if event["event"] == "on_chain_stream" and not event["parent_ids"]:
            streamed.append(event["data"]["chunk"])
    names = [chunk["event"] for chunk in streamed]
    assert names[0] == "metadata"
    assert names[-1] == "interrupt"
    assert streamed[-1]["thread_id"] == events_thread

    resumed = await agent.ainvoke(
        {"resume": {"decision": "reject", "reason": "remote no"}},
        config=_config(events_thread),
    )
    assert resumed["event"] == "final"
    assert "remote no" in resumed["answer"]


async def test_batch_schemas_and_bad_input(
    api: RunningServer, remote_agent: RemoteRunnable[Any, Any], make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Batch answer.")
    agent = remote_agent
    results = await agent.abatch(
        [{"question": "What is A?"}, {"question": "What is B?"}],
        config=_config("", model=spec, approval="never"),
    )
    assert [r["event"] for r in results] == ["final", "final"]
    assert results[0]["thread_id"] != results[1]["thread_id"]

    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        schema = (await client.get("/agent/input_schema")).json()
        assert {"question", "resume"} <= set(schema["properties"])
        config_schema = (await client.get("/agent/config_schema")).json()
        configurable = str(config_schema)
        for name in ("thread_id", "approval", "model", "max_replans", "token_budget"):
            assert name in configurable, name
        assert (await client.get("/agent/playground/")).status_code == 200
        bad = await client.post("/agent/invoke", json={"input": {"question": "x", "resume": {}}})
        assert bad.status_code == 422
        neither = await client.post("/agent/invoke", json={"input": {}})
        assert neither.status_code == 422


async def test_astream_events_carries_the_standard_chat_model_events(
    remote_agent: RemoteRunnable[Any, Any], make_model: MakeModel
) -> None:
    """What LangChain UIs and tutorials filter for: `on_chat_model_stream` per token, tagged
    with the node and the step, between a start and an end per model call."""
    spec, _ = make_model(reply="Alpha beta gamma.")
    thread_id = f"remote-{uuid.uuid4().hex}"
    events = [
        e
        async for e in remote_agent.astream_events(
            {"question": QUESTION},
            config=_config(thread_id, model=spec, approval="never", mode="plan"),
            version="v2",
        )
    ]
    tokens = [e for e in events if e["event"] == "on_chat_model_stream"]
    starts = [e for e in events if e["event"] == "on_chat_model_start"]
    ends = [e for e in events if e["event"] == "on_chat_model_end"]
    steps = {e["metadata"]["step_id"] for e in tokens if e["metadata"]["step_id"]}
    assert steps == {"s1", "s2"}  # one model call per step of the two-part plan
    assert len(starts) == len(ends) >= 2
    for step in steps:
        mine = [e for e in tokens if e["metadata"]["step_id"] == step]
        assert {e["metadata"]["langgraph_node"] for e in mine} == {"reasoning"}
        assert f"agentgraph:step:{step}" in mine[0]["tags"]
        text = "".join(e["data"]["chunk"].content for e in mine)
        assert text == "Alpha beta gamma."
        [end] = [e for e in ends if e["run_id"] == mine[0]["run_id"]]
        assert end["data"]["output"].content == "Alpha beta gamma."
    # Our own events still come, as the root runnable's stream.
    ours = [e["data"]["chunk"]["event"] for e in events if e["event"] == "on_chain_stream"]
    assert "delta" in ours
    assert ours[-1] == "final"
