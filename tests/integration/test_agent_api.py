"""The LangGraph Agent API of `agentgraph serve`, driven by `langgraph_sdk` over real uvicorn:
assistants and `/info`, threads (create, get, search, metadata, state, history, state updates,
delete), runs streamed in every served mode or waited for, background runs on the queue, and
the same threads seen through the native API."""

from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import ConflictError, NotFoundError

from app.settings import Settings
from tests.fakes import MakeModel
from tests.integration.server_harness import RunningServer, running_server

QUESTION = "What is A? What is B?"


def _context(spec: str, **more: Any) -> dict[str, Any]:
    return {"model": spec, "approval": "never", "mode": "plan", **more}


async def test_info_and_the_graphs_assistant(api: RunningServer) -> None:
    client = get_client(url=api.base_url)
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        info = (await http.get("/info")).json()
    assert info["flags"]["assistants"] is True
    assert info["version"]

    [assistant] = await client.assistants.search(graph_id="agent")
    assert assistant["graph_id"] == "agent"
    assert await client.assistants.search(graph_id="other") == []
    same = await client.assistants.get("agent")
    assert same["assistant_id"] == assistant["assistant_id"]
    drawn = await client.assistants.get_graph(assistant["assistant_id"])
    nodes = {n["id"] for n in drawn["nodes"]}
    assert {"orchestrator", "planner", "critic", "synthesize"} <= nodes
    schemas = await client.assistants.get_schemas(assistant["assistant_id"])
    assert schemas["input_schema"]["required"] == ["request"]
    assert "approval" in schemas["context_schema"]["properties"]
    assert await client.assistants.get_subgraphs(assistant["assistant_id"]) == {}
    with pytest.raises(NotFoundError):
        await client.assistants.get("no-such-assistant")


async def test_threads_are_made_searched_updated_and_deleted(api: RunningServer) -> None:
    client = get_client(url=api.base_url)
    thread = await client.threads.create(metadata={"team": "research", "case": "t1"})
    thread_id = thread["thread_id"]
    assert thread["status"] == "idle"
    assert thread["metadata"]["team"] == "research"
    with pytest.raises(ConflictError):
        await client.threads.create(thread_id=thread_id)
    again = await client.threads.create(thread_id=thread_id, if_exists="do_nothing")
    assert again["thread_id"] == thread_id

    found = await client.threads.search(metadata={"case": "t1"})
    assert [t["thread_id"] for t in found] == [thread_id]
    marker = {"team": "research", "batch": thread_id}  # this test's threads alone
    await client.threads.update(thread_id, metadata=marker)
    await client.threads.create(metadata={**marker, "case": "t2"})
    assert await client.threads.count(metadata=marker) == 2
    assert await client.threads.count(metadata={"case": "t1"}) == 1
    assert await client.threads.count(metadata={"case": "t1"}, status="idle") == 1
    assert await client.threads.count(metadata={"case": "t1"}, status="busy") == 0
    await client.threads.update(thread_id, metadata={"stage": "two"})
    assert (await client.threads.get(thread_id))["metadata"] == {
        "team": "research",
        "case": "t1",
        "batch": thread_id,
        "stage": "two",
    }
    await client.threads.delete(thread_id)
    with pytest.raises(NotFoundError):
        await client.threads.get(thread_id)


async def test_stream_modes_carry_what_langgraph_names_them(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer {n}.")
    client = get_client(url=api.base_url)
    thread = await client.threads.create()
    seen: dict[str, list[Any]] = {}
    async for part in client.runs.stream(
        thread["thread_id"],
        "agent",
        input={"request": QUESTION},
        context=_context(spec),
        stream_mode=["values", "updates", "custom", "messages-tuple"],
    ):
        seen.setdefault(part.event, []).append(part.data)
    assert seen["metadata"][0]["run_id"]
    assert seen["values"][-1]["status"] == "done"
    assert {"orchestrator", "planner", "synthesize"} <= {k for u in seen["updates"] for k in u}
    assert "final" in {c["event"] for c in seen["custom"]}
    message, metadata = seen["messages"][0]
    assert message["content"]
    assert metadata["langgraph_node"] in {"reasoning", "synthesize"}

    partial: list[str] = []
    async for part in client.runs.stream(
        thread["thread_id"],
        "agent",
        input={"request": "What is C?"},
        context=_context(spec),
        stream_mode="messages",
    ):
        partial.append(part.event)
    assert "messages/metadata" in partial
    assert "messages/partial" in partial

    events: list[str] = []
    async for part in client.runs.stream(
        thread["thread_id"],
        "agent",
        input={"request": "What is D?"},
        context=_context(spec),
        stream_mode="events",
    ):
        if part.event == "events":
            events.append(part.data["event"])
    assert "on_chain_start" in events
    assert "on_chat_model_stream" in events


async def test_a_run_waits_resumes_and_its_state_and_history_read_back(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer {n}.")
    client = get_client(url=api.base_url)
    thread = await client.threads.create()
    thread_id = thread["thread_id"]

    first = await client.runs.wait(
        thread_id,
        "agent",
        input={"request": QUESTION},
        context=_context(spec, approval="always"),
    )
    assert isinstance(first, dict)
    assert first["__interrupt__"][0]["value"]["gate"] == "plan"
    assert (await client.threads.get(thread_id))["status"] == "interrupted"
    state = await client.threads.get_state(thread_id)
    assert state["next"] == ["approve_plan"]
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        inbox = (await http.get("/api/v1/approvals")).json()
    assert thread_id in {item["thread_id"] for item in inbox}
    assert state["tasks"][0]["interrupts"]

    # A new question on a thread that waits for a person is refused, as everywhere.
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await client.runs.wait(thread_id, "agent", input={"request": "Another?"})
    assert refused.value.response.status_code == 409
    assert "waits for approval" in refused.value.response.text

    done = await client.runs.wait(thread_id, "agent", command={"resume": {"decision": "approve"}})
    assert isinstance(done, dict)
    assert done["status"] == "done"
    history = await client.threads.get_history(thread_id, limit=50)
    assert len(history) > 3
    at = history[-1]["checkpoint"]["checkpoint_id"]
    old = await client.threads.get_state(thread_id, checkpoint_id=at)
    assert old["checkpoint"]["checkpoint_id"] == at

    updated = await client.threads.update_state(thread_id, {"answer": "Edited."})
    assert updated["checkpoint"]["checkpoint_id"]
    assert (await client.threads.get_state(thread_id))["values"]["answer"] == "Edited."

    # The native API sees the same thread.
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        native = (await http.get(f"/api/v1/threads/{thread_id}")).json()
    assert native["answer"] == "Edited."
    assert native["report"]["approvals"][0]["decision"] == "approve"


async def test_a_thread_is_copied_and_pruned(api: RunningServer, make_model: MakeModel) -> None:
    spec, _ = make_model(reply="Answer {n}.")
    client = get_client(url=api.base_url)
    thread = await client.threads.create(metadata={"origin": "copy-test"})
    await client.runs.wait(
        thread["thread_id"], "agent", input={"request": QUESTION}, context=_context(spec)
    )
    before = await client.threads.get_history(thread["thread_id"], limit=100)

    copy = await client.threads.copy(thread["thread_id"])
    assert isinstance(copy, dict)
    assert copy["thread_id"] != thread["thread_id"]
    assert copy["metadata"] == {"origin": "copy-test"}
    assert (
        copy["values"]["answer"]
        == (await client.threads.get(thread["thread_id"]))["values"]["answer"]
    )
    copied = await client.threads.get_history(copy["thread_id"], limit=100)
    assert [s["checkpoint"]["checkpoint_id"] for s in copied] == [
        s["checkpoint"]["checkpoint_id"] for s in before
    ]

    kept = await client.threads.prune([copy["thread_id"]], strategy="keep_latest")
    assert kept == {"pruned_count": 1}
    assert len(await client.threads.get_history(copy["thread_id"], limit=100)) < len(copied)
    assert (await client.threads.get_state(copy["thread_id"]))["values"]["status"] == "done"
    gone = await client.threads.prune([copy["thread_id"]])
    assert gone == {"pruned_count": 1}
    with pytest.raises(NotFoundError):
        await client.threads.get(copy["thread_id"])
    # The original is untouched.
    assert len(await client.threads.get_history(thread["thread_id"], limit=100)) == len(before)


async def test_background_runs_are_the_queues_runs(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer {n}.")
    client = get_client(url=api.base_url)
    thread = await client.threads.create()
    run = await client.runs.create(
        thread["thread_id"], "agent", input={"request": QUESTION}, context=_context(spec)
    )
    assert run["status"] in ("pending", "running", "success")
    values = await client.runs.join(thread["thread_id"], run["run_id"])
    assert isinstance(values, dict)
    assert values["status"] == "done"
    got = await client.runs.get(thread["thread_id"], run["run_id"])
    assert got["status"] == "success"
    listed = await client.runs.list(thread["thread_id"])
    assert [r["run_id"] for r in listed] == [run["run_id"]]
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        native = await http.get(f"/api/v1/threads/{thread['thread_id']}/runs/{run['run_id']}")
    assert native.json()["status"] == "done"


async def test_what_is_not_served_is_refused_clearly(
    api: RunningServer, make_model: MakeModel
) -> None:
    spec, _ = make_model(reply="Answer {n}.")
    client = get_client(url=api.base_url)
    thread = await client.threads.create()
    for body, status, says in (
        ({"input": {"request": QUESTION}, "interrupt_before": ["planner"]}, 422, "interrupt_"),
        ({"input": {"question": QUESTION}}, 422, "request"),
        ({"command": {"goto": "planner"}}, 422, "only resume"),
    ):
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await client.runs.wait(thread["thread_id"], "agent", **body)
        assert refused.value.response.status_code == status
        assert says in refused.value.response.text
    with pytest.raises(httpx.HTTPStatusError) as unknown:
        await client.runs.wait("no-such-thread", "agent", input={"request": QUESTION})
    assert unknown.value.response.status_code == 404
    created = await client.runs.wait(
        "made-on-the-fly-" + thread["thread_id"],
        "agent",
        input={"request": QUESTION},
        context=_context(spec),
        if_not_exists="create",
    )
    assert isinstance(created, dict)
    assert created["status"] == "done"
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        bad_mode = await http.post(
            f"/threads/{thread['thread_id']}/runs/stream",
            json={"assistant_id": "agent", "input": {"request": "x"}, "stream_mode": "nope"},
        )
        nul_checkpoint = await http.get(
            f"/threads/{thread['thread_id']}/history", params={"before": "ab\x00cd"}
        )
    assert bad_mode.status_code == 422
    assert "not served" in bad_mode.json()["message"]
    assert nul_checkpoint.status_code == 422
    assert nul_checkpoint.json()["detail"][0]["loc"] == ["query", "before"]


async def test_a_browser_origin_in_the_settings_may_call_the_api(
    settings: Settings, embedded_url: str
) -> None:
    studio = "https://smith.langchain.com"
    allowed = settings.model_copy(update={"cors_origins": [studio]})
    with running_server(allowed, embedded_url) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            preflight = await http.options(
                "/threads/search",
                headers={"Origin": studio, "Access-Control-Request-Method": "POST"},
            )
            other = await http.options(
                "/threads/search",
                headers={
                    "Origin": "https://elsewhere.example",
                    "Access-Control-Request-Method": "POST",
                },
            )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == studio
    assert "access-control-allow-origin" not in other.headers
