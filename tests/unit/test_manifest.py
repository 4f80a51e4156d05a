"""Manifests: the default one, and errors that name the file, the line, the path and the fix."""

from pathlib import Path

import pytest

from app.errors import ManifestError
from app.tools.manifest import (
    default_manifest,
    default_manifest_text,
    load_manifest,
    parse_manifest,
)
from nodes.toolbox import build_toolbox

GOOD = """\
version: 1
agents:
  - name: clerk
    description: Keeps the notes.
    tools: [read_file, write_file]
  - name: analyst
    description: Works numbers out.
    model: fake:echo
    prompt: Be exact.
    tools: [calculator]
tools:
  calculator: {timeout_s: 2}
  read_file: {root: ./notes}
  write_file: {root: ./notes, max_bytes: 1000}
policy:
  approval_for: [write]
"""


def test_the_default_manifest_has_an_agent_with_the_read_only_tools_and_two_without() -> None:
    manifest = default_manifest()
    assert [a.name for a in manifest.agents] == ["default", "explainer", "skeptic"]
    assert [a.tools for a in manifest.agents[1:]] == [[], []]
    assert manifest.agents[0].tools == ["calculator", "document_search"]
    assert manifest.tools.enabled() == ["calculator", "document_search"]
    assert manifest.policy.approval_for == ["write", "external"]
    assert parse_manifest(default_manifest_text(), source="x") == manifest
    assert load_manifest(None) is manifest


def test_a_good_manifest_loads_with_its_settings(tmp_path: Path) -> None:
    path = tmp_path / "agentgraph.yaml"
    path.write_text(GOOD)
    manifest = load_manifest(path)
    assert manifest.agent("analyst") is not None
    assert manifest.agent("analyst").model == "fake:echo"  # type: ignore[union-attr]
    assert manifest.tools.write_file is not None
    assert manifest.tools.write_file.max_bytes == 1000
    assert manifest.tools.calculator is not None
    assert manifest.tools.calculator.timeout_s == 2


def test_the_toolbox_grants_and_gates_as_the_manifest_says() -> None:
    toolbox = build_toolbox(parse_manifest(GOOD, source="m.yaml"))
    assert toolbox.default_agent == "clerk"
    assert [t.name for t in toolbox.granted("clerk")] == ["read_file", "write_file"]
    assert [t.name for t in toolbox.granted("analyst")] == ["calculator"]
    roster = toolbox.roster()
    assert roster.gated == frozenset({"write_file"})  # approval_for: [write] only
    assert roster.effects == {"calculator": "read", "read_file": "read", "write_file": "write"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD.replace("name: analyst", "name: Analyst"),
            r"^m\.yaml:6: agents\[1\]\.name: String should match pattern",
        ),
        (
            GOOD.replace("tools: [calculator]", "tools: [calculater]"),
            r"^m\.yaml:10: agents\[1\]\.tools\[0\]: agent 'analyst' is granted 'calculater', "
            r"which this manifest does not declare; .*grant one of: calculator, read_file",
        ),
        (
            GOOD.replace("  calculator: {timeout_s: 2}", "  shell: {}"),
            r"^m\.yaml:12: tools\.shell: 'shell' is not a built-in tool \(built-ins: "
            r"calculator, document_search.*come from 'mcp_servers'",
        ),
        (
            GOOD.replace("read_file: {root: ./notes}", "read_file: {}"),
            r"^m\.yaml:13: tools\.read_file\.root: 'root' is required here",
        ),
        (
            GOOD.replace("timeout_s: 2", "timeout_s: -1"),
            r"^m\.yaml:12: tools\.calculator\.timeout_s: Input should be greater than 0",
        ),
        (
            GOOD.replace("prompt: Be exact.", "promt: Be exact."),
            r"^m\.yaml:9: agents\[1\]\.promt: unknown field 'promt': remove it or check",
        ),
        (
            GOOD.replace("approval_for: [write]", "approval_for: [writes]"),
            r"^m\.yaml:16: policy\.approval_for\[0\]: Input should be 'read', 'write' or",
        ),
        (
            GOOD.replace("name: analyst", "name: clerk"),
            r"^m\.yaml:\d+: manifest: agent names must be unique: clerk more than once",
        ),
        ("agents: [\n", r"^m\.yaml:2: not valid YAML"),
        ("- just a list\n", r"^m\.yaml: a manifest is a mapping with at least 'agents'"),
        ("version: 1\n", r"^m\.yaml:1: agents: 'agents' is required here"),
        (
            "agents: [{name: a, description: x}]\nmcp_servers:\n  notes: {transport: stdio}\n",
            r"^m\.yaml:3: mcp_servers\.notes: a stdio server needs 'command'",
        ),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_line_the_field_and_the_fix(
    text: str, message: str
) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(text, source="m.yaml")


def test_every_problem_is_named_at_once() -> None:
    text = GOOD.replace("name: analyst", "name: Analyst").replace("timeout_s: 2", "timeout_s: 0")
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, source="m.yaml")
    assert len(str(caught.value).splitlines()) == 2


def test_a_missing_file_is_a_manifest_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nothing\.yaml: cannot read the manifest"):
        load_manifest(tmp_path / "nothing.yaml")


def test_an_mcp_grant_must_name_a_declared_server() -> None:
    text = "agents: [{name: a, description: x, tools: ['mcp:notes']}]\n"
    with pytest.raises(ManifestError, match=r"agents\[0\]\.tools\[0\]: agent 'a' is granted"):
        parse_manifest(text, source="m.yaml")
