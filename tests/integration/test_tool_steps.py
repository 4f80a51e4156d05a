"""Tool steps on the real graph and Postgres: the local model calls the calculator through
its grammar and gets the right number; calls the policy refuses, or whose arguments the
schema refuses, fail the step and are audited; the audit is read back over HTTP."""

from typing import Any

import httpx

from graphs.runs import RunEvent, stream_events
from graphs.service import Agent
from nodes.context import Context
from tests.fakes import MakeModel
from tests.integration.server_harness import RunningServer


async def _run(agent: Agent, thread_id: str, context: Context, request: str) -> list[RunEvent]:
    return [
        e
        async for e in stream_events(
            agent.graph, thread_id=thread_id, context=context, request=request
        )
    ]


def _results(events: list[RunEvent]) -> list[dict[str, Any]]:
    return [e["result"] for e in events if e["event"] == "step_result"]


async def test_the_local_model_calls_the_calculator(agent: Agent, thread_id: str) -> None:
    context = Context(model="local", approval="never", max_output_tokens=48)
    events = await _run(agent, thread_id, context, "What is 17 * 23?")

    [result] = _results(events)
    assert result["kind"] == "tool"
    assert result["status"] == "done"
    assert result["tool_calls"][0]["tool"] == "calculator"
    assert result["tool_calls"][0]["result"] == "391"
    assert "391" in result["output"]
    assert "391" in events[-1]["answer"]
    [call, *_] = await agent.audit.calls(thread_id)
    assert (call.step_id, call.tool, call.status) == (result["step_id"], "calculator", "ok")
    assert call.arguments == {"expression": "17 * 23"}
    assert call.approval == "not needed"


async def test_refused_and_invalid_calls_fail_the_step_and_are_audited(
    agent: Agent, api: RunningServer, thread_id: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(
        reply="I could not compute it.",
        tool_script=[
            {"name": "shell", "args": {"command": "rm -rf /", "api_key": "sk-abcdefghijklmnop"}},
            {"name": "calculator", "args": {"expression": "__import__('os')"}},
        ],
    )
    events = await _run(agent, thread_id, Context(model=spec, approval="never"), "What is 2 * 3?")

    result = _results(events)[0]  # the critic sends a failed step back: its retry comes after
    assert result["status"] == "failed"
    assert "tool_calls" in result, result["error"]
    assert [c["status"] for c in result["tool_calls"]] == ["refused", "invalid"]
    assert "no tool named 'shell'" in result["tool_calls"][0]["result"]
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        audit = (await http.get(f"/api/v1/threads/{thread_id}/audit")).json()
        unknown = await http.get("/api/v1/threads/no-such-thread/audit")
    calls = audit["calls"]
    assert [(c["tool"], c["status"]) for c in calls] == [
        ("shell", "refused"),
        ("calculator", "invalid"),
    ]
    assert calls[0]["arguments"] == {"command": "rm -rf /", "api_key": "[redacted]"}
    assert "expression" in calls[1]["error"]
    assert unknown.status_code == 404


async def test_a_tool_step_falls_back_on_the_next_model_of_its_route(
    agent: Agent, thread_id: str, make_model: MakeModel
) -> None:
    """The step's first model fails every turn; the next model of the route calls the
    calculator and answers, the failure is announced and reported, and the usage is the
    answering model's."""
    broken, _ = make_model(tool_fail_first=-1)
    spec, backup = make_model(
        reply="It is 6.", tool_script=[{"name": "calculator", "args": {"expression": "2 * 3"}}]
    )
    context = Context(model=broken, fallbacks={"*": [spec]}, approval="never")
    events = await _run(agent, thread_id, context, "What is 2 * 3?")

    [result] = _results(events)
    assert result["status"] == "done", result["error"]
    assert result["tool_calls"][0]["result"] == "6"
    assert backup.tool_turns == 2  # it called the calculator, then answered
    [fallback] = [e for e in events if e["event"] == "fallback" and e["node"] == "tool"]
    assert (fallback["model"], fallback["reason"], fallback["next"]) == (broken, "error", spec)
    assert "scripted failure on tool turn 1" in fallback["error"]
    report = events[-1]["report"]
    [taken] = [f for f in report["model_fallbacks"] if f["node"] == "tool"]
    assert (taken["model"], taken["answered_by"]) == (broken, spec)
    # Two turns of the answering model, 11 tokens in and 3 out each; the failures spent none.
    assert (result["usage"]["input_tokens"], result["usage"]["output_tokens"]) == (22, 6)
