"""A manifest's agents and tools on the real graph and Postgres: a `write` tool is blocked
until a person approves its step and then runs, with the approval in the audit; a tool not
granted to the step's agent is refused and logged; an MCP server's tool is called over stdio
from a tool step; a bad manifest stops the agent with a message naming the field."""

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.errors import ManifestError
from app.settings import Settings
from app.tools.manifest import Manifest, parse_manifest
from graphs.runs import RunEvent, stream_events
from graphs.service import Agent, open_agent
from nodes.context import Context
from tests.fakes import MakeModel
from tests.integration.conftest import Cli

NOTES_SERVER = Path(__file__).with_name("mcp_notes_server.py")


def team_manifest(out: Path, notes: Path) -> Manifest:
    text = f"""
agents:
  - name: clerk
    description: Writes files.
    tools: [write_file]
  - name: analyst
    description: Works numbers out.
    tools: [calculator]
  - name: keeper
    description: Keeps notes in the notes server.
    tools: ["mcp:notes"]
tools:
  calculator: {{}}
  write_file: {{root: {out}}}
mcp_servers:
  notes:
    transport: stdio
    command: {sys.executable}
    args: [{NOTES_SERVER}]
    env: {{MCP_NOTES_DIR: {notes}}}
    effect: read
    effects: {{add_note: write}}
"""
    return parse_manifest(text, source="team.yaml")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("out")


@pytest.fixture(scope="module")
async def team(
    settings: Settings, embedded_url: str, out_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Agent]:
    """An agent over the session's database with the team manifest and its MCP server."""
    manifest = team_manifest(out_dir, tmp_path_factory.mktemp("notes"))
    async with open_agent(settings, url=embedded_url, manifest=manifest) as opened:
        yield opened


async def _run(agent: Agent, thread_id: str, context: Context, **run: Any) -> list[RunEvent]:
    return [
        e async for e in stream_events(agent.graph, thread_id=thread_id, context=context, **run)
    ]


def _results(events: list[RunEvent]) -> list[dict[str, Any]]:
    return [e["result"] for e in events if e["event"] == "step_result"]


WRITE = "Write the summary to out/summary.txt"


async def test_a_write_tool_runs_only_after_its_step_is_approved(
    team: Agent, thread_id: str, make_model: MakeModel, out_dir: Path
) -> None:
    spec, _ = make_model(
        reply="Saved.",
        tool_script=[{"name": "write_file", "args": {"path": "summary.txt", "content": "ok"}}],
    )
    context = Context(model=spec, mode="direct", max_replans=0)
    events = await _run(team, thread_id, context, request=WRITE)

    [pause] = [e for e in events if e["event"] == "interrupt"]
    payload = pause["payload"]
    [step] = payload["plan"]["steps"]
    assert (step["kind"], step["agent"], step["tools"]) == ("tool", "clerk", ["write_file"])
    assert step["requires_approval"] is True
    assert "may call write_file (write)" in payload["risk"]
    assert not (out_dir / "summary.txt").exists()
    assert await team.audit.calls(thread_id) == []  # nothing ran before the approval

    events = await _run(
        team, thread_id, context, resume={"decision": "approve", "by": "ada", "plan": None}
    )
    [result] = _results(events)
    assert result["status"] == "done", result
    assert (out_dir / "summary.txt").read_text() == "ok"
    [call] = await team.audit.calls(thread_id)
    assert (call.agent, call.tool, call.status) == ("clerk", "write_file", "ok")
    assert call.approval.startswith("approved by ada at ")


async def test_a_write_tool_in_a_run_that_never_asks_is_refused_and_logged(
    team: Agent, thread_id: str, make_model: MakeModel, out_dir: Path
) -> None:
    spec, _ = make_model(
        reply="Could not save.",
        tool_script=[{"name": "write_file", "args": {"path": "never.txt", "content": "x"}}],
    )
    context = Context(model=spec, mode="direct", approval="never", max_replans=0)
    events = await _run(team, thread_id, context, request=WRITE)

    [result] = _results(events)
    assert result["status"] == "failed"
    assert result["tool_calls"][0]["status"] == "refused"
    assert "must be approved first" in result["tool_calls"][0]["result"]
    assert not (out_dir / "never.txt").exists()
    [call] = await team.audit.calls(thread_id)
    assert (call.tool, call.status, call.approval) == ("write_file", "refused", None)


async def test_a_tool_not_granted_to_the_steps_agent_is_refused_and_logged(
    team: Agent, thread_id: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(
        reply="Could not compute.",
        tool_script=[{"name": "write_file", "args": {"path": "x.txt", "content": "x"}}],
    )
    context = Context(model=spec, mode="direct", approval="never", max_replans=0)
    events = await _run(team, thread_id, context, request="What is 6 * 7?")

    [result] = _results(events)
    assert result["status"] == "failed"
    [refused] = result["tool_calls"]
    assert refused["status"] == "refused"
    assert "agent 'analyst' may not call 'write_file' (granted: calculator)" in refused["result"]
    [call] = await team.audit.calls(thread_id)
    assert (call.agent, call.tool, call.status) == ("analyst", "write_file", "refused")


async def test_an_mcp_tool_is_called_over_stdio_from_a_tool_step(
    team: Agent, thread_id: str, make_model: MakeModel
) -> None:
    spec, _ = make_model(
        reply="The sum is 42.",
        tool_script=[{"name": "notes_add", "args": {"a": 2, "b": 40}}],
    )
    plan = {
        "goal": "add",
        "steps": [
            {
                "id": "s1",
                "kind": "tool",
                "instruction": "Add 2 and 40 with the notes server.",
                "depends_on": [],
                "requires_approval": False,
                "agent": "keeper",
                "tools": ["notes_add"],
            }
        ],
    }
    context = Context(model=spec, approval="always", max_replans=0)
    events = await _run(team, thread_id, context, request="Add 2 and 40 with the notes server.")
    assert [e for e in events if e["event"] == "interrupt"]
    events = await _run(
        team, thread_id, context, resume={"decision": "edit", "reason": "use notes", "plan": plan}
    )

    [result] = _results(events)
    assert result["status"] == "done", result
    assert result["tool_calls"][0]["result"] == "42"
    [call] = await team.audit.calls(thread_id)
    assert (call.agent, call.tool, call.status) == ("keeper", "notes_add", "ok")


async def test_a_bad_manifest_stops_the_agent_naming_the_field(
    settings: Settings, embedded_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "agentgraph.yaml"
    path.write_text("agents:\n  - name: clerk\n    description: x\n    tools: [rm]\n")
    bad = settings.model_copy(update={"manifest": path})
    with pytest.raises(ManifestError, match=r"agentgraph\.yaml:4: agents\[0\]\.tools\[0\]: "):
        async with open_agent(bad, url=embedded_url):
            pass


def test_manifest_check_names_the_problem_or_lists_the_tools(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "agents:\n  - name: clerk\n    description: x\n    tools: [calculater]\n"
        "tools:\n  calculator: {}\n"
    )
    refused = cli.run("manifest", "check", str(bad))
    assert refused.returncode == 1
    assert "bad.yaml:4: agents[0].tools[0]: agent 'clerk' is granted 'calculater'" in (
        " ".join(refused.stderr.split())
    )
    assert "Traceback" not in refused.stderr

    good = tmp_path / "team.yaml"
    manifest = team_manifest(tmp_path / "out", tmp_path / "notes")
    good.write_text(yaml.safe_dump(manifest.model_dump(mode="json", exclude_defaults=True)))
    checked = cli.run("manifest", "check", str(good))
    assert checked.returncode == 0, checked.stderr
    assert "team.yaml: valid: 3 agents, 9 tools" in checked.stdout
    assert "notes_add_note" in checked.stdout
    unstarted = cli.run("manifest", "check", str(good), "--no-connect")
    assert "valid: 3 agents, 2 tools (MCP servers not started)" in unstarted.stdout

    shown = cli.run("manifest", "show", "--tools", env={"AGENTGRAPH_MANIFEST": str(good)})
    assert shown.returncode == 0, shown.stderr
    [write_row] = [line for line in shown.stdout.splitlines() if "write_file" in line]
    assert "clerk" in write_row
    assert "required" in write_row
    default = cli.run("manifest", "show")
    assert default.stdout.startswith("# The manifest that applies when AGENTGRAPH_MANIFEST")


def test_a_run_under_a_bad_manifest_stops_at_start_with_its_message(
    cli: Cli, tmp_path: Path
) -> None:
    bad = tmp_path / "agentgraph.yaml"
    bad.write_text("agents:\n  - name: clerk\n")
    proc = cli.run("ask", "What is 2 + 2?", env={"AGENTGRAPH_MANIFEST": str(bad)})
    assert proc.returncode == 1
    assert "agentgraph.yaml:2: agents[0].description: 'description' is required here" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


async def test_the_local_model_calls_a_write_tool_after_approval(
    team: Agent, thread_id: str
) -> None:
    # write_file's content may be a million characters long: the local model's grammar must
    # take its schema without nesting a rule per character (which crashed llama.cpp).
    context = Context(model="local", mode="direct", max_replans=0, max_output_tokens=48)
    events = await _run(team, thread_id, context, request="Write hello to the file out/hello.txt")
    assert [e for e in events if e["event"] == "interrupt"]

    events = await _run(team, thread_id, context, resume={"decision": "approve", "plan": None})
    [result] = _results(events)
    assert result["tool_calls"], result
    assert result["tool_calls"][0]["tool"] == "write_file"
    [call, *_] = await team.audit.calls(thread_id)
    assert call.tool == "write_file"
    assert call.approval.startswith("approved by a person at ")


async def test_the_graph_without_a_toolbox_takes_the_settings_manifest_and_its_mcp_tools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_model: MakeModel
) -> None:
    """What `langgraph dev` serves: the module's graph, compiled with no toolbox."""
    from langgraph.checkpoint.memory import InMemorySaver

    from app.settings import get_settings
    from graphs.agent import compile_graph
    from nodes import toolbox

    path = tmp_path / "agentgraph.yaml"
    manifest = team_manifest(tmp_path / "out", tmp_path / "notes")
    path.write_text(yaml.safe_dump(manifest.model_dump(mode="json", exclude_defaults=True)))
    monkeypatch.setenv("AGENTGRAPH_MANIFEST", str(path))
    monkeypatch.setattr(toolbox, "_SETTINGS_TOOLBOX", [])
    get_settings.cache_clear()
    try:
        spec, _ = make_model(
            reply="42.", tool_script=[{"name": "notes_add", "args": {"a": 2, "b": 40}}]
        )
        graph = compile_graph(InMemorySaver())
        plan = {
            "goal": "add",
            "steps": [
                {
                    "id": "s1",
                    "kind": "tool",
                    "instruction": "Add 2 and 40.",
                    "depends_on": [],
                    "requires_approval": False,
                    "agent": "keeper",
                }
            ],
        }
        context = Context(model=spec, approval="always", max_replans=0)
        await _run_graph(graph, "dev-1", context, request="Add 2 and 40.")
        events = await _run_graph(
            graph, "dev-1", context, resume={"decision": "edit", "reason": "r", "plan": plan}
        )
        [result] = _results(events)
        assert result["status"] == "done", result
        assert result["tool_calls"][0]["result"] == "42"
    finally:
        get_settings.cache_clear()


async def _run_graph(graph: Any, thread_id: str, context: Context, **run: Any) -> list[RunEvent]:
    return [e async for e in stream_events(graph, thread_id=thread_id, context=context, **run)]
