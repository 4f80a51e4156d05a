"""Errors through LangServe reach a `RemoteRunnable` as `httpx.HTTPStatusError` with the status
code and message of the native API, on `stream` and `astream_events` as on `invoke`, and the
server logs no traceback for them; a whole run streams through `astream_events`."""

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.runnables import RunnableConfig
from langserve import RemoteRunnable

from tests.fakes import MakeModel
from tests.integration.server_harness import RunningServer

QUESTION = "What is A? What is B?"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_log() -> Iterator[list[logging.LogRecord]]:
    """What the in-process server logs meanwhile (uvicorn's loggers do not reach the root)."""
    handler = _Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture
def agent(remote_agent: RemoteRunnable[Any, Any]) -> RemoteRunnable[Any, Any]:
    return remote_agent


def _config(thread_id: str, **options: Any) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, **options}}


async def _collect(events: AsyncIterator[Any]) -> list[Any]:
    return [e async for e in events]


async def _fails_everywhere(
    agent: RemoteRunnable[Any, Any], value: dict[str, Any], config: RunnableConfig
) -> list[httpx.HTTPStatusError]:
    """Send one input through stream, astream_events and invoke; return the three errors."""
    errors = []
    for call in (
        lambda: _collect(agent.astream(value, config=config)),
        lambda: _collect(agent.astream_events(value, config=config, version="v2")),
        lambda: agent.ainvoke(value, config=config),
    ):
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await call()
        errors.append(caught.value)
    return errors


def _assert_error(errors: list[httpx.HTTPStatusError], status: int, *phrases: str) -> None:
    for error in errors:
        assert error.response.status_code == status, error
        for phrase in phrases:
            assert phrase in str(error), error


def _assert_no_traceback(records: list[logging.LogRecord]) -> None:
    bad = [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


async def test_user_errors_reach_a_remote_runnable_with_their_status_and_message(
    api: RunningServer,
    agent: RemoteRunnable[Any, Any],
    make_model: MakeModel,
    server_log: list[logging.LogRecord],
) -> None:
    spec, _ = make_model(reply="Remote answer.")
    thread_id = f"remote-err-{uuid.uuid4().hex}"
    config = _config(thread_id, model=spec, approval="always")
    events = await _collect(agent.astream({"question": QUESTION}, config=config))
    assert events[-1]["event"] == "interrupt"

    approve = {"resume": {"decision": "approve"}}
    no_approval = {"requires_approval": False}
    cyclic = {
        "goal": "g",
        "steps": [
            {
                "id": "a",
                "kind": "reasoning",
                "instruction": "x",
                "depends_on": ["b"],
                **no_approval,
            },
            {
                "id": "b",
                "kind": "reasoning",
                "instruction": "y",
                "depends_on": ["a"],
                **no_approval,
            },
        ],
    }
    bad_edit = {"resume": {"decision": "edit", "plan": cyclic}}
    _assert_error(
        await _fails_everywhere(agent, bad_edit, config), 422, "the edited plan is invalid"
    )
    bad_decision = {"resume": {"decision": "maybe"}}
    _assert_error(await _fails_everywhere(agent, bad_decision, config), 422, "resume.decision")
    busy = {"question": "Another question?"}
    _assert_error(await _fails_everywhere(agent, busy, config), 409, "resume it instead")

    final = await agent.ainvoke(approve, config=config)
    assert final["event"] == "final"
    _assert_error(await _fails_everywhere(agent, approve, config), 409, "nothing to resume")
    unknown = _config(f"remote-unknown-{uuid.uuid4().hex}")
    _assert_error(await _fails_everywhere(agent, approve, unknown), 404, "unknown thread")

    question = {"question": "What is A?"}
    fresh = f"remote-err-{uuid.uuid4().hex}"
    no_model = _config(fresh, model="nosuchprovider:nothing")
    _assert_error(
        await _fails_everywhere(agent, question, no_model), 422, "model", "cannot be used"
    )
    _assert_error(
        await _fails_everywhere(agent, question, _config(fresh, approval="sometimes")),
        422,
        "approval",
    )
    _assert_error(
        await _fails_everywhere(agent, question, _config(fresh, max_replans=-1)),
        422,
        "max_replans must be >= 0",
    )
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        # None of the refused questions started a run on the thread.
        assert (await client.get(f"/api/v1/threads/{fresh}")).status_code == 404
    _assert_no_traceback(server_log)


async def test_a_question_on_a_running_thread_is_409_through_langserve(
    agent: RemoteRunnable[Any, Any],
    make_model: MakeModel,
    tmp_path: Path,
    server_log: list[logging.LogRecord],
) -> None:
    gate = tmp_path / "gate"
    spec, _ = make_model(reply="Held answer.", gate_file=str(gate))
    config = _config(f"remote-busy-{uuid.uuid4().hex}", model=spec, approval="never")
    stream = agent.astream({"question": QUESTION}, config=config)
    async for event in stream:
        if event["event"] == "handoff" and event.get("target") == "reasoning":
            break  # the run now waits in the model, at the closed gate
    errors = await _fails_everywhere(agent, {"question": QUESTION}, config)
    _assert_error(errors, 409, "is running")
    gate.touch()
    rest = await _collect(stream)
    assert rest[-1]["event"] == "final"
    assert "Held answer." in rest[-1]["answer"]
    _assert_no_traceback(server_log)


async def test_a_whole_run_streams_through_astream_events(
    agent: RemoteRunnable[Any, Any], make_model: MakeModel, server_log: list[logging.LogRecord]
) -> None:
    spec, _ = make_model(reply="Evented answer.")
    chunks = [
        event["data"]["chunk"]
        async for event in agent.astream_events(
            {"question": QUESTION},
            config=_config(f"remote-events-{uuid.uuid4().hex}", model=spec, approval="never"),
            version="v2",
        )
        if event["event"] == "on_chain_stream"
    ]
    names = [chunk["event"] for chunk in chunks]
    assert names[0] == "metadata"
    assert names.count("step_result") == 2
    assert names[-1] == "final"
    assert "Evented answer." in chunks[-1]["answer"]
    _assert_no_traceback(server_log)


async def test_langserve_stream_errors_are_error_events_for_plain_clients(
    api: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        body = {
            "input": {"resume": {"decision": "approve"}},
            "config": {"configurable": {"thread_id": "no-such-thread-0000"}},
        }
        response = await client.post("/agent/stream", json=body)
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.text.startswith("event: error\n")
        assert '"status_code": 404' in response.text
        # The native API and LangServe's invoke keep their JSON error bodies.
        invoke = await client.post("/agent/invoke", json=body)
        assert invoke.status_code == 404
        assert invoke.json()["error"] == "ThreadNotFoundError"
