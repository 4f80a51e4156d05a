"""The graph under `langgraph dev` (what LangGraph Studio talks to), and under `agentgraph
serve` (its LangGraph Agent API on the durable Postgres threads), driven by the same
`langgraph_sdk` and `RemoteGraph` code: offline, no LangSmith key, the real local model."""

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.pregel.remote import RemoteGraph
from langgraph.types import Command
from langgraph_sdk import get_client

from bench.common import free_port
from tests.integration.conftest import REPO, Cli, serving

CONTEXT = {"approval": "always", "max_output_tokens": 24}


def _langgraph_dev(data_dir: Path, embedded_url: str) -> Iterator[str]:
    """`langgraph dev` on a free port; its log and state live outside the repository, and
    its rag steps look for documents in this session's database."""
    workdir = Path(tempfile.mkdtemp(prefix="agentgraph-studio-"))
    port = free_port()
    env = {
        **os.environ,
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "AGENTGRAPH_DATA_DIR": str(data_dir),
        "DATABASE_URL": embedded_url,
    }
    env.pop("LANGSMITH_API_KEY", None)
    command = [
        sys.executable,
        "-m",
        "langgraph_cli",
        "dev",
        "--config",
        str(REPO / "langgraph.json"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-browser",
        "--no-reload",
    ]
    url = f"http://127.0.0.1:{port}"
    with serving(
        command,
        ready_url=f"{url}/ok",
        log_path=workdir / "langgraph-dev.log",
        cwd=workdir,
        env=env,
        timeout=120,
    ):
        yield url


def _agentgraph_serve(cli: Cli) -> Iterator[str]:
    """`agentgraph serve` on a free port, on this session's database."""
    workdir = Path(tempfile.mkdtemp(prefix="agentgraph-studio-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with serving(
        command,
        ready_url=f"{url}/readyz",
        log_path=workdir / "agentgraph-serve.log",
        cwd=REPO,
        env=cli.env,
        timeout=120,
    ):
        yield url


@pytest.fixture(scope="module", params=["langgraph-dev", "agentgraph-serve"])
def dev_server(
    request: pytest.FixtureRequest, data_dir: Path, embedded_url: str, cli: Cli
) -> Iterator[str]:
    """The same client code runs against both servers."""
    if request.param == "langgraph-dev":
        yield from _langgraph_dev(data_dir, embedded_url)
    else:
        yield from _agentgraph_serve(cli)


async def test_sdk_stream_interrupt_resume_and_history(dev_server: str) -> None:
    client = get_client(url=dev_server)
    thread = await client.threads.create()
    thread_id = thread["thread_id"]

    seen: list[tuple[str, Any]] = []
    async for part in client.runs.stream(
        thread_id,
        "agent",
        input={"request": "What is A? What is B?"},
        context=CONTEXT,
        stream_mode=["updates", "custom"],
    ):
        seen.append((part.event, part.data))
    custom = [data["event"] for event, data in seen if event == "custom"]
    assert "plan_update" in custom
    interrupts = [
        data["__interrupt__"]
        for event, data in seen
        if event == "updates" and "__interrupt__" in data
    ]
    assert interrupts
    assert interrupts[0][0]["value"]["gate"] == "plan"
    state = await client.threads.get_state(thread_id)
    assert state["next"] == ["approve_plan"]

    final: dict[str, Any] | None = None
    async for part in client.runs.stream(
        thread_id,
        "agent",
        command={"resume": {"decision": "approve"}},
        context=CONTEXT,
        stream_mode=["updates", "custom"],
    ):
        if part.event == "custom" and part.data.get("event") == "final":
            final = part.data
    assert final is not None
    assert final["status"] == "done"
    assert final["answer"]
    assert final["report"]["approvals"][0]["decision"] == "approve"

    history = await client.threads.get_history(thread_id)
    assert len(history) > 3


async def test_run_options_are_a_typed_context_schema(dev_server: str) -> None:
    client = get_client(url=dev_server)
    [assistant] = await client.assistants.search(graph_id="agent")
    schemas = await client.assistants.get_schemas(assistant["assistant_id"])
    properties = schemas["context_schema"]["properties"]
    assert {"model", "approval", "planner", "max_replans", "token_budget"} <= set(properties)
    assert properties["approval"]["enum"] == ["never", "always", "when_required"]


def test_remote_graph_runs_the_same_graph(dev_server: str) -> None:
    remote = RemoteGraph("agent", url=dev_server)
    config = {"configurable": {"thread_id": get_sync_thread(dev_server)}}
    first = remote.invoke({"request": "What is A? What is B?"}, config, context=CONTEXT)
    assert "__interrupt__" in first
    done = remote.invoke(Command(resume={"decision": "approve"}), config, context=CONTEXT)
    assert done["status"] == "done"
    assert done["answer"]
    assert done["report"]["total_tokens"] > 0


def get_sync_thread(url: str) -> str:
    from langgraph_sdk import get_sync_client

    thread_id: str = get_sync_client(url=url).threads.create()["thread_id"]
    return thread_id


async def test_messages_stream_carries_the_model_tokens_tagged_with_node_and_step(
    dev_server: str,
) -> None:
    client = get_client(url=dev_server)
    thread = await client.threads.create()
    chunks: list[tuple[dict[str, Any], dict[str, Any]]] = []
    deltas: list[dict[str, Any]] = []
    async for part in client.runs.stream(
        thread["thread_id"],
        "agent",
        input={"request": "Name one primary colour."},
        context={**CONTEXT, "approval": "never", "mode": "direct", "max_output_tokens": 16},
        stream_mode=["messages-tuple", "custom"],
    ):
        if part.event == "messages":
            message, metadata = part.data
            chunks.append((message, metadata))
        elif part.event == "custom" and part.data.get("event") == "delta":
            deltas.append(part.data)
    assert chunks, "no message chunk streamed"
    assert {m["langgraph_node"] for _, m in chunks} == {"reasoning"}
    assert {m["step_id"] for _, m in chunks} == {d["step_id"] for d in deltas}
    assert "agentgraph:node:reasoning" in chunks[0][1]["tags"]
    # The same tokens as our own delta events, in addition to them.
    assert "".join(m["content"] for m, _ in chunks) == "".join(d["text"] for d in deltas)
