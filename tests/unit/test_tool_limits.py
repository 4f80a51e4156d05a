"""The file and HTTP tools keep to their directory and their hosts; plans keep to the roster."""

import os
from pathlib import Path

import pytest

from app.errors import PlanValidationError, ToolArgumentError
from app.tools.files import inside, read_file_tool, write_file_tool
from app.tools.http import host_allowed, http_get_tool
from app.tools.manifest import FileToolConfig, HttpGetConfig, parse_manifest
from app.tools.policy import run_tool
from nodes.plans import Roster, direct_plan, rule_plan, validate_plan
from nodes.toolbox import build_toolbox

KINDS = {"reasoning", "rag", "tool"}


@pytest.mark.parametrize("path", ["../secret", "/etc/passwd", "a/../../b", ".", "a/.."])
def test_a_path_out_of_the_root_is_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(ToolArgumentError, match="is not a file under the tool's directory"):
        inside(tmp_path / "root", path)


def test_a_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    with pytest.raises(ToolArgumentError, match="not a file under"):
        inside(root, "link.txt")


async def test_write_then_read_within_the_root_and_its_size_cap(tmp_path: Path) -> None:
    config = FileToolConfig(root=tmp_path, max_bytes=20)
    write, read = write_file_tool(config), read_file_tool(config)
    assert (
        await run_tool(write, {"path": "a/b.txt", "content": "hello"}) == "wrote a/b.txt (5 bytes)"
    )
    assert (
        await run_tool(write, {"path": "a/b.txt", "content": "hi"}) == "replaced a/b.txt (2 bytes)"
    )
    assert await run_tool(read, {"path": "a/b.txt"}) == "hi"
    with pytest.raises(ToolArgumentError, match="writes at most 20"):
        await run_tool(write, {"path": "big.txt", "content": "x" * 21})
    (tmp_path / "big.txt").write_text("x" * 21)
    with pytest.raises(ToolArgumentError, match="reads at most 20"):
        await run_tool(read, {"path": "big.txt"})
    with pytest.raises(ToolArgumentError, match=r"there is no file 'none\.txt'"):
        await run_tool(read, {"path": "none.txt"})
    with pytest.raises(ToolArgumentError, match="path"):
        await run_tool(read, {"path": "a\x00b"})


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("example.org", True),
        ("EXAMPLE.org.", True),
        ("api.docs.example.com", True),
        ("example.com", False),  # `*.example.com` is its subdomains
        ("evil-example.org", False),
        ("example.org.evil.net", False),
    ],
)
def test_the_host_allow_list(host: str, allowed: bool) -> None:
    assert host_allowed(host, ["example.org", "*.example.com"]) is allowed


async def test_http_get_refuses_unlisted_and_internal_hosts() -> None:
    tool = http_get_tool(HttpGetConfig(allow_hosts=["localhost"]))
    with pytest.raises(ToolArgumentError, match=r"'example\.net' is not on the tool's allow-list"):
        await run_tool(tool, {"url": "http://example.net/"})
    with pytest.raises(ToolArgumentError, match="an internal address the tool may not reach"):
        await run_tool(tool, {"url": "http://localhost:9/"})
    with pytest.raises(ToolArgumentError, match="url"):
        await run_tool(tool, {"url": "file:///etc/passwd"})


TEAM = parse_manifest(
    """
agents:
  - {name: analyst, description: numbers, tools: [calculator]}
  - {name: clerk, description: files, tools: [read_file, write_file]}
  - {name: thinker, description: thinks}
tools:
  calculator: {}
  read_file: {root: /tmp}
  write_file: {root: /tmp}
""",
    source="team.yaml",
)
ROSTER: Roster = build_toolbox(TEAM).roster()


def plan(*steps: dict[str, object]) -> dict[str, object]:
    return {
        "goal": "g",
        "steps": [
            {"id": f"s{i}", "depends_on": [], "requires_approval": False, **s}
            for i, s in enumerate(steps, 1)
        ],
    }


def test_a_tool_step_is_given_its_agents_tools_and_an_approval_where_one_is_gated() -> None:
    checked = validate_plan(
        plan(
            {"kind": "tool", "instruction": "17 * 23"},
            {"kind": "tool", "instruction": "save it", "agent": "clerk", "tools": ["write_file"]},
            {"kind": "reasoning", "instruction": "explain", "agent": "thinker"},
        ),
        known_kinds=KINDS,
        max_steps=5,
        roster=ROSTER,
    )
    first, second, third = checked["steps"]
    assert (first["agent"], first["tools"], first["requires_approval"]) == (
        "analyst",
        ["calculator"],
        False,
    )
    assert (second["agent"], second["tools"], second["requires_approval"]) == (
        "clerk",
        ["write_file"],
        True,
    )
    assert "tools" not in third


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ({"kind": "tool", "agent": "ghost"}, "step s1: unknown agent 'ghost' (agents: analyst"),
        ({"kind": "tool", "tools": ["shell"]}, "step s1: unknown tool 'shell'"),
        (
            {"kind": "tool", "tools": ["write_file"]},
            "step s1: agent 'analyst' may not call 'write_file' (granted: calculator)",
        ),
        (
            {"kind": "reasoning", "tools": ["calculator"]},
            "step s1: only a tool step calls tools (this one is 'reasoning')",
        ),
        (
            {"kind": "tool", "agent": "thinker"},
            "step s1: agent 'thinker' may call no tool, so it runs no tool step",
        ),
    ],
)
def test_a_plan_against_the_roster_is_refused_naming_the_step(
    step: dict[str, object], problem: str
) -> None:
    with pytest.raises(PlanValidationError) as caught:
        validate_plan(
            plan({"instruction": "x", **step}), known_kinds=KINDS, max_steps=5, roster=ROSTER
        )
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_the_rule_planner_gives_a_step_to_the_agent_whose_tool_it_needs() -> None:
    (step,) = direct_plan("What is 17 * 23?", roster=ROSTER)["steps"]
    assert (step["kind"], step["agent"], step["tools"]) == ("tool", "analyst", ["calculator"])
    steps = rule_plan(
        "Read the file notes.txt; then write the summary to out/summary.txt",
        max_steps=5,
        roster=ROSTER,
    )["steps"]
    assert [(s["kind"], s.get("agent"), s.get("tools")) for s in steps] == [
        ("tool", "clerk", ["read_file"]),
        ("tool", "clerk", ["write_file"]),
    ]
    assert [s["requires_approval"] for s in steps] == [False, True]
    (plain,) = direct_plan("Why is the sky blue?", roster=ROSTER)["steps"]
    assert plain["kind"] == "reasoning"


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        (
            {"kind": "reasoning", "pattern": "committee", "members": ["analyst", "ghost"]},
            "step s1: unknown committee member 'ghost'",
        ),
        (
            {"kind": "reasoning", "pattern": "committee", "members": ["analyst", "analyst"]},
            "step s1: a committee needs two different agents or more",
        ),
        (
            {"kind": "tool", "pattern": "committee"},
            "step s1: only a reasoning step is answered by a committee",
        ),
    ],
)
def test_a_committee_step_names_known_agents(step: dict[str, object], problem: str) -> None:
    with pytest.raises(PlanValidationError) as caught:
        validate_plan(
            plan({"instruction": "x", **step}), known_kinds=KINDS, max_steps=5, roster=ROSTER
        )
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_use_pattern_gives_reasoning_steps_to_the_first_three_agents() -> None:
    from nodes.plans import use_pattern

    mixed = validate_plan(
        plan({"kind": "reasoning", "instruction": "why"}, {"kind": "tool", "instruction": "2*3"}),
        known_kinds=KINDS,
        max_steps=5,
        roster=ROSTER,
    )
    committee, note = use_pattern(mixed, "committee", ROSTER)
    first, second = committee["steps"]
    assert (first["pattern"], first["members"]) == ("committee", ["analyst", "clerk", "thinker"])
    assert "pattern" not in second
    assert note == "s1 answered by a committee of analyst, clerk, thinker"
    assert use_pattern(mixed, "single", ROSTER) == (mixed, None)
